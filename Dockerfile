# rt in a container: `rt serve` on 0.0.0.0:8080 as an unprivileged user.
# docker-compose.yml runs three of these on PostgreSQL and Redis; see docs/operations.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY rt ./rt
RUN pip install . && rm -rf /src

# The data dir holds the pepper and secret key when RT_KEY_PEPPER / RT_SECRET_KEY are unset, and the SQLite store
# when RT_DATABASE_URL is: it belongs to the rt user alone.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/rt --shell /usr/sbin/nologin rt \
    && install -d -m 0700 -o rt -g rt /var/lib/rt /var/lib/rt/data
USER rt
WORKDIR /var/lib/rt

ENV RT_HOST=0.0.0.0 \
    RT_PORT=8080 \
    RT_DATA_DIR=/var/lib/rt/data

EXPOSE 8080

HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RT_PORT', '8080') + '/v1/health', timeout=2)"]

# `docker run IMAGE` serves; `docker run IMAGE keys create ...` runs any other rt command on the same settings.
ENTRYPOINT ["rt"]
CMD ["serve"]
