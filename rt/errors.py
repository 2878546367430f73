"""The one exception tree. Handlers turn an RtError into problem+json (REST) or an error message (WebSocket)."""

from __future__ import annotations

import functools
from typing import Any

# Stable error codes (SPEC §3). Clients match on these strings.
API_KEY_MISSING = "API_KEY_MISSING"
API_KEY_INVALID = "API_KEY_INVALID"
API_KEY_REVOKED = "API_KEY_REVOKED"
REQUEST_SIGNATURE_INVALID = "REQUEST_SIGNATURE_INVALID"
INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
KEY_LIMIT_REACHED = "KEY_LIMIT_REACHED"
IDEMPOTENCY_CONFLICT = "IDEMPOTENCY_CONFLICT"
VALIDATION_FAILED = "VALIDATION_FAILED"
TRADING_LOCKED = "TRADING_LOCKED"
RATE_LIMITED = "RATE_LIMITED"
IP_LOCKED_OUT = "IP_LOCKED_OUT"
BAD_REQUEST = "BAD_REQUEST"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"
WEBHOOK_URL_NOT_ALLOWED = "WEBHOOK_URL_NOT_ALLOWED"
WEBHOOK_LIMIT_REACHED = "WEBHOOK_LIMIT_REACHED"
WEBHOOK_DISABLED = "WEBHOOK_DISABLED"
ALERT_HOOK_LIMIT_REACHED = "ALERT_HOOK_LIMIT_REACHED"
ALERT_UNAUTHORIZED = "ALERT_UNAUTHORIZED"

TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Validation Failed",
    423: "Locked",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


# The Kerosyne `message` of a Cerberus refusal whose subject (position or order) is not known.
VALIDATION_MESSAGE = "Validation failed"


class RtError(Exception):
    """Root of every error rt reports to a client."""

    status: int = 500
    code: str = INTERNAL_ERROR
    # What the Kerosyne `error.message` says, when the detail is not it (a route names what Cerberus refused).
    message: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra

    @property
    def title(self) -> str:
        return TITLES.get(self.status, "Error")

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://rt.dev/problems/{self.code.lower().replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        body["error"] = self.kerosyne()
        return body

    def kerosyne(self) -> dict[str, Any]:
        """The Kerosyne member every problem carries: `{"code": <status>, "message", "details"?}`. Its details are
        Cerberus's (`check`, `reason`, `limit`, `requested`, the reason as a sentence), a 400's field `errors`, or
        what else the problem carries."""
        message = self.message or (VALIDATION_MESSAGE if self.code == VALIDATION_FAILED else self.detail)
        member: dict[str, Any] = {"code": self.status, "message": message}
        details = self.extra.get("details")
        if isinstance(details, dict):
            reason = details.get("reason")
            member["details"] = {**details, "reason": sentence(reason)} if isinstance(reason, str) else dict(details)
        elif self.extra.get("errors") is not None:
            member["details"] = {"errors": self.extra["errors"]}
        elif self.extra:
            member["details"] = dict(self.extra)
        return member


def sentence(text: str) -> str:
    """A reason as a sentence (`exceeds max position size` -> `Exceeds max position size`), as clients show it."""
    return text[:1].upper() + text[1:]


class BadRequest(RtError):
    status, code = 400, BAD_REQUEST


class Unauthorized(RtError):
    status, code = 401, API_KEY_INVALID


class Forbidden(RtError):
    status, code = 403, INSUFFICIENT_SCOPE


class NotFound(RtError):
    status, code = 404, NOT_FOUND


class Conflict(RtError):
    status, code = 409, IDEMPOTENCY_CONFLICT


class PayloadTooLarge(RtError):
    status, code = 413, PAYLOAD_TOO_LARGE


class UnsupportedMediaType(RtError):
    status, code = 415, UNSUPPORTED_MEDIA_TYPE


class ValidationFailed(RtError):
    status, code = 422, VALIDATION_FAILED


class Locked(RtError):
    status, code = 423, TRADING_LOCKED


class TooManyRequests(RtError):
    status, code = 429, RATE_LIMITED


class Unavailable(RtError):
    status, code = 503, SERVICE_UNAVAILABLE


RETRY_AFTER_OUTAGE_S = 1


@functools.cache
def _lost_connection() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(PostgreSQL's, Redis's) error types that always mean the connection to the service is gone; asyncpg's
    client-side InterfaceError and InternalClientError only sometimes do (`_postgres_client_gone`)."""
    import asyncpg.exceptions as pg
    import redis.exceptions as rd

    postgres: tuple[type[BaseException], ...] = (
        pg.PostgresConnectionError,  # SQLSTATE class 08, ConnectionDoesNotExistError among them
        pg.AdminShutdownError,
        pg.CrashShutdownError,
        pg.CannotConnectNowError,
        pg.TooManyConnectionsError,  # every connection slot taken (by other instances too): try again shortly
        pg.TargetServerAttributeNotMatched,  # no host reached is the primary (or standby) asked for: a failover
    )
    return postgres, (rd.ConnectionError, rd.TimeoutError)


# asyncpg's own errors carry no code, only these messages. An InterfaceError says the connection (or the pool, as rt
# stops) is closed; any other InterfaceError is a misuse or bad data (DataError: an argument of the wrong type) and
# stays a 500. A plain InternalClientError saying the protocol cannot start an operation ("not connected", "cannot
# switch to state ...; another operation (...) is in progress" or "... protocol is in the "failed" state") is what the
# first query on a pooled connection the server has just ended raises; its subclasses (ProtocolError, a bad value on
# the wire; OutdatedSchemaCacheError, a schema change) and its other messages are bugs.
_CLOSED_INTERFACE = ("connection is closed", "pool is closing", "pool is closed")
_CANNOT_START = ("not connected", "cannot switch to state ")


def _postgres_client_gone(exc: BaseException) -> bool:
    import asyncpg.exceptions as pg

    message = str(exc.args[0]) if exc.args else ""
    if isinstance(exc, pg.InterfaceError):
        return type(exc) is pg.InterfaceError and message.endswith(_CLOSED_INTERFACE)
    if type(exc) is pg.InternalClientError:
        return message == _CANNOT_START[0] or message.startswith(_CANNOT_START[1])
    return False


def _raised_in(exc: BaseException) -> str:
    """The service whose client library raised a plain OSError (a refused reconnect, say), as its traceback says."""
    tb = exc.__traceback__
    named = "a service rt depends on"
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("asyncpg"):
            named = "PostgreSQL"
        elif module.startswith("redis"):
            named = "Redis"
        tb = tb.tb_next
    return named


def outage(exc: BaseException) -> Unavailable | None:
    """503 SERVICE_UNAVAILABLE with `Retry-After: 1` for an error that says PostgreSQL, Redis or another service is
    unreachable (the error itself or one it was raised from), None for any other. REST routes and WebSocket commands
    answer it instead of a 500; the client retries with the same idempotency key once the service is back."""
    postgres, redis = _lost_connection()
    seen: BaseException | None = exc
    for _ in range(16):  # an exception chain is short; a bound also ends a cycle
        if seen is None:
            return None
        if isinstance(seen, postgres) or _postgres_client_gone(seen):
            service = "PostgreSQL"
        elif isinstance(seen, redis):
            service = "Redis"
        elif isinstance(seen, OSError):
            service = _raised_in(seen)
        else:
            seen = seen.__cause__ if seen.__suppress_context__ else (seen.__cause__ or seen.__context__)
            continue
        return Unavailable(
            f"{service} is unreachable; retry in {RETRY_AFTER_OUTAGE_S} s (a write retried with the same idempotency "
            "key is done once)",
            headers={"Retry-After": str(RETRY_AFTER_OUTAGE_S)},
            retry_after=RETRY_AFTER_OUTAGE_S,
        )
    return None
