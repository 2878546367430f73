"""docker-compose.yml, deploy/haproxy.cfg and the Dockerfile: the topology docs/operations.md walks through.

Images cannot be pulled here, so these read the files as compose, HAProxy and docker would, and feed every rt
instance's environment to rt's own settings; `docker compose config` runs too where a compose command is installed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rt.auth.network import client_ip, parse_networks
from rt.config import OPTIONS, Settings

ROOT = Path(__file__).resolve().parent.parent
INSTANCES = ("rt1", "rt2", "rt3")
# What .env holds in a real deployment; distinct values so a mix-up between them shows.
ENV = {"POSTGRES_PASSWORD": "pg-pw-1f2e", "RT_KEY_PEPPER": "pepper-9c8b", "RT_SECRET_KEY": "secret-7a6d"}
SECRET_SETTINGS = {option.env for option in OPTIONS if option.secret}

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-|\?|-)(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`, as `docker compose` substitutes from .env."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        found = env.get(name)
        if op in (":?", "?") and (found is None or (op == ":?" and found == "")):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and (found is None or (op == ":-" and found == "")):
            return arg
        return found or ""

    return _VARIABLE.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def environment(service: Mapping[str, Any], env: Mapping[str, str] = ENV) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(str(value), env) for key, value in raw.items()}


def settings(service: Mapping[str, Any]) -> Settings:
    """The settings an instance of this service starts with: the image's ENV, then the service's environment."""
    return Settings.from_env({**dockerfile_env(), **environment(service)})


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), " ".join(rest.split())))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile():
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def haproxy() -> dict[str, list[str]]:
    """deploy/haproxy.cfg by section (`backend rt` -> its directive lines)."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (ROOT / "deploy" / "haproxy.cfg").read_text().splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(line.split()), [])
        else:
            current.append(" ".join(line.split()))
    return sections


def test_postgres_redis_and_three_instances_of_one_image(services: dict[str, Any]) -> None:
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    images = {(services[name]["image"], str(services[name]["build"])) for name in INSTANCES}
    assert len(images) == 1, images
    rt_services = {name for name, service in services.items() if "build" in service}
    assert rt_services == set(INSTANCES)


def test_every_instance_shares_one_store_one_redis_one_pepper_and_secret_key(services: dict[str, Any]) -> None:
    started = {name: settings(services[name]) for name in INSTANCES}
    shared = {(s.database_url, s.redis_url, s.redis_prefix, s.key_pepper, s.secret_key) for s in started.values()}
    assert len(shared) == 1, "every instance must start with the same store, Redis, pepper and secret key"
    first = started["rt1"]
    assert first.database_url == f"postgresql://rt:{ENV['POSTGRES_PASSWORD']}@postgres:5432/rt"
    assert first.redis_url.startswith("redis://redis:6379")
    # Both from .env: an instance left to generate its own pepper would refuse every key the others issued.
    assert (first.key_pepper, first.secret_key) == (ENV["RT_KEY_PEPPER"], ENV["RT_SECRET_KEY"])
    postgres = environment(services["postgres"])
    assert (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]) == (
        "rt",
        ENV["POSTGRES_PASSWORD"],
        "rt",
    )


def test_every_rt_variable_set_is_a_real_setting(services: dict[str, Any]) -> None:
    known = {option.env for option in OPTIONS}
    for name in INSTANCES:
        unknown = {key for key in environment(services[name]) if key.startswith("RT_")} - known
        assert not unknown, f"{name} sets {unknown}, which rt does not read"
    assert {key for key in dockerfile_env() if key.startswith("RT_")} <= known


def test_no_literal_secret_in_the_compose_file(services: dict[str, Any]) -> None:
    """Every secret is a required `${NAME:?...}` from .env: missing or empty, `docker compose up` refuses."""
    required = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")
    for name, service in services.items():
        for key, value in dict(service.get("environment", {})).items():
            value = str(value)
            if key in SECRET_SETTINGS or "PASSWORD" in key:
                assert required.match(value), f"{name}: {key} must come from .env, not {value!r}"
            for url_password in re.findall(r"://[^:/@]+:([^@]+)@", value):
                assert required.match(url_password), f"{name}: {key} holds a literal password"
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in ENV.values():
        assert secret not in text
    for name in INSTANCES:
        for missing in ENV:
            with pytest.raises(KeyError, match=missing):
                environment(services[name], {**ENV, missing: ""})


def test_exactly_one_instance_bootstraps_the_first_key(services: dict[str, Any]) -> None:
    bootstrapping = [name for name in INSTANCES if settings(services[name]).bootstrap]
    assert bootstrapping == ["rt1"]


def test_instances_wait_for_healthy_services_and_the_lb_for_healthy_instances(services: dict[str, Any]) -> None:
    def waits_for(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    for name in INSTANCES:
        assert waits_for(name) == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert waits_for("lb") == dict.fromkeys(INSTANCES, "service_healthy")
    # service_healthy needs a health check: postgres and redis have theirs here, rt's is the image's.
    for name in ("postgres", "redis"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    for name in INSTANCES:
        assert "healthcheck" not in services[name] or not services[name]["healthcheck"].get("disable")
    healthchecks = [rest for word, rest in dockerfile() if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/v1/health" in healthchecks[0]


def test_the_lb_spreads_over_all_three_instances_without_stickiness(services: dict[str, Any]) -> None:
    lb = services["lb"]
    assert lb["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    config = haproxy()
    backend = config["backend rt"]
    assert "balance roundrobin" in backend
    servers = {line.split()[1]: line.split()[2] for line in backend if line.startswith("server ")}
    assert servers == {name: f"{name}:{settings(services[name]).port}" for name in INSTANCES}
    sticky = [line for section in config.values() for line in section if line.split()[0] in ("cookie", "stick")]
    assert not sticky
    assert not any(line.startswith("balance") and line != "balance roundrobin" for line in backend)


def test_the_lb_checks_readiness_and_passes_websocket_upgrades() -> None:
    config = haproxy()
    backend = config["backend rt"]
    assert "option httpchk" in backend
    assert "http-check send meth GET uri /v1/ready" in backend
    assert "http-check expect status 200" in backend
    default_server = next(line for line in backend if line.startswith("default-server"))
    assert " check " in f"{default_server} "
    # HTTP mode passes `Upgrade: websocket` through and then tunnels; the tunnel timeout, not the request
    # timeouts, governs an open socket, and it outlasts rt's heartbeats.
    defaults = config["defaults"]
    assert "mode http" in defaults
    tunnel = next(line for line in defaults if line.startswith("timeout tunnel"))
    assert tunnel.split()[2] in ("1h", "3600s")
    assert "mode tcp" not in [line for section in config.values() for line in section]


def test_the_lb_alone_is_believed_for_x_forwarded_for(compose: dict[str, Any], services: dict[str, Any]) -> None:
    lb_address = services["lb"]["networks"]["rt"]["ipv4_address"]
    subnet = compose["networks"]["rt"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb_address) in ipaddress.ip_network(subnet)
    frontend = haproxy()["frontend rt"]
    # Replaced, never appended to: a client's own X-Forwarded-For must not reach rt.
    assert "http-request set-header X-Forwarded-For %[src]" in frontend
    assert not any("forwardfor" in line for section in haproxy().values() for line in section)
    for name in INSTANCES:
        trusted = parse_networks(settings(services[name]).trusted_proxies, "RT_TRUSTED_PROXIES")
        assert client_ip(lb_address, "203.0.113.7", trusted) == "203.0.113.7"
        # Another container on the network (or a client reaching an instance directly) is not believed.
        other = str(ipaddress.ip_network(subnet)[20])
        assert client_ip(other, "203.0.113.7", trusted) == other


def test_the_lb_is_published_on_loopback_only(services: dict[str, Any]) -> None:
    assert services["lb"]["ports"] == ["127.0.0.1:8080:8080"]
    for name in ("postgres", "redis", *INSTANCES):
        assert "ports" not in services[name], f"{name} must be reached through the network, not published"


def test_the_image_runs_rt_serve_as_a_non_root_user_on_all_interfaces() -> None:
    instructions = dockerfile()
    words = [word for word, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(word == "RUN" and "pip install ." in rest for word, rest in instructions)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert words.index("USER") < words.index("ENTRYPOINT")
    entrypoint = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    command = json.loads(next(rest for word, rest in instructions if word == "CMD"))
    assert entrypoint + command == ["rt", "serve"]
    image = Settings.from_env(dockerfile_env())
    assert (image.host, image.port) == ("0.0.0.0", 8080)
    assert ("EXPOSE", "8080") in instructions


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "rt-data", ".env"} <= ignored


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_accepts_the_file_and_refuses_missing_secrets(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; the structure tests above still ran")
    base = {key: value for key, value in os.environ.items() if key not in ENV}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in ENV.items()))
    run = [*command, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    done = subprocess.run([*run, "--env-file", str(env_file), "config"], capture_output=True, text=True, env=base)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == {"postgres", "redis", "lb", *INSTANCES}
    urls = {resolved["services"][name]["environment"]["RT_DATABASE_URL"] for name in INSTANCES}
    assert urls == {f"postgresql://rt:{ENV['POSTGRES_PASSWORD']}@postgres:5432/rt"}

    env_file.write_text(f"POSTGRES_PASSWORD={ENV['POSTGRES_PASSWORD']}\nRT_KEY_PEPPER=\n")
    refused = subprocess.run([*run, "--env-file", str(env_file), "config"], capture_output=True, text=True, env=base)
    assert refused.returncode != 0
    assert "RT_KEY_PEPPER" in refused.stderr or "RT_SECRET_KEY" in refused.stderr
