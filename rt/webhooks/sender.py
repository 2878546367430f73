"""One POST of a delivery to its receiver, and what came of it.

The destination is checked again just before connecting and the connection goes to the address that was checked,
so a name that now resolves to a private address (DNS rebinding) is never reached. Connections are pooled per host
name, not per address: TLS verified for one name is never reused for another that shares its address."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import cast
from urllib.parse import quote, urlsplit

import certifi
import httpcore

from rt.records.webhooks import RESPONSE_SNIPPET
from rt.webhooks import ssrf

log = logging.getLogger("rt.webhooks")

MAX_CONNECTIONS = 512
MAX_KEEPALIVE = 128
KEEPALIVE_S = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SET_HERE = {"host", "accept-encoding"}
_HTTPCORE_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None: no HTTP answer (timeout, refused, TLS, blocked address)
    latency_ms: float
    error: str | None
    response: str  # the first RESPONSE_SNIPPET characters of the body
    retry_after_s: float | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class _Pin:
    host: str
    addresses: tuple[str, ...] | None  # None: connect by name (a host the operator allowed)


# The destination of the request this task is sending; the network backend reads it when it opens a connection.
_PIN: contextvars.ContextVar[_Pin | None] = contextvars.ContextVar("rt_webhook_pin", default=None)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Opens a connection to the checked address of the host being sent to, and to nothing else."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pin = _PIN.get()
        if pin is None or pin.host != host:
            raise httpcore.ConnectError(f"no checked address for {host}")
        if pin.addresses is None:
            return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in pin.addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e
        assert failure is not None  # safe_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not sent over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # ASCII (IDNA), no brackets: what the pool keys on, TLS checks and the backend is asked to reach
    port: int | None
    path: str  # path and query, percent-encoded

    @property
    def url(self) -> httpcore.URL:
        return httpcore.URL(scheme=self.scheme, host=self.host, port=self.port, target=self.path)

    @property
    def port_or_default(self) -> int:
        return self.port or _DEFAULT_PORTS[self.scheme]

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port in (None, _DEFAULT_PORTS[self.scheme]) else f"{host}:{self.port}"


class _InvalidTarget(Exception):
    pass


class Sender:
    """POSTs deliveries: never follows a redirect, never uses a proxy from the environment, gives each attempt
    `timeout_s` in all, and never raises (but CancelledError): every outcome is an Answer."""

    def __init__(
        self, allow_hosts: Sequence[str], timeout_s: float, *, resolve: ssrf.Resolver = ssrf.system_resolver
    ) -> None:
        self.allow_hosts = tuple(allow_hosts)
        self.timeout_s = timeout_s
        self._resolve = resolve
        # httpcore follows no redirect, reads no proxy or certificate setting from the environment, decodes nothing
        # and pools by origin (scheme, host name, port); TLS gets the name as SNI and is checked against it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_KEEPALIVE,
            keepalive_expiry=KEEPALIVE_S,
            network_backend=_PinnedBackend(),
        )
        self._timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        started = time.perf_counter()

        def failed(error: str) -> Answer:
            return Answer(None, _since(started), error, "", None)

        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._send(url, body, headers, started)
        except TimeoutError:
            return failed(f"no answer within the timeout of {self.timeout_s:g} s")
        except ssrf.Blocked as e:
            return failed(f"destination refused: {e.detail.removeprefix('webhook URL refused: ')}")
        except _InvalidTarget as e:
            return failed(f"the URL cannot be sent to: {e}")
        except httpcore.TimeoutException:
            return failed(f"no answer within the timeout of {self.timeout_s:g} s")
        except _HTTPCORE_ERRORS as e:
            return failed(_describe(e))
        except Exception as e:
            log.warning("webhook send to %s failed unexpectedly: %s", _origin(url), type(e).__name__)
            return failed(f"unexpected failure: {type(e).__name__}")

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], started: float) -> Answer:
        target = _target(url)
        host = target.host
        if ssrf.is_allowed(host, self.allow_hosts):
            pin = _Pin(host, None)
        else:
            checked = await ssrf.safe_addresses(host, target.port_or_default, self.allow_hosts, resolve=self._resolve)
            pin = _Pin(host, tuple(checked))
        token = _PIN.set(pin)
        try:
            async with self._pool.stream(
                "POST",
                target.url,
                headers=_request_headers(target, headers),
                content=body,
                extensions={"timeout": self._timeouts},
            ) as response:
                snippet = await _snippet(response)
        finally:
            _PIN.reset(token)
        code = response.status
        error = None
        if not 200 <= code < 300:
            error = f"answered {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        return Answer(code, _since(started), error, snippet, retry_after_s(_header(response, b"retry-after")))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta seconds or an HTTP date), or None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return max(0.0, at.timestamp() - (time.time() if now is None else now))


async def _snippet(response: httpcore.Response) -> str:
    # At most four bytes a character in UTF-8: read no more than the snippet can hold, and leave the rest unread.
    wanted = RESPONSE_SNIPPET * 4
    chunks: list[bytes] = []
    size = 0
    # aiter_stream is an async generator (typed as an iterator): close it here rather than when it is collected.
    stream = cast(AsyncGenerator[bytes, None], response.aiter_stream())
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            chunks.append(chunk)
            size += len(chunk)
            if size >= wanted:
                break
    return b"".join(chunks)[:wanted].decode("utf-8", errors="replace")[:RESPONSE_SNIPPET]


def _target(url: str) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _InvalidTarget(str(e)) from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise _InvalidTarget("the scheme is not http or https")
    name = parts.hostname or ""
    if not name:
        raise _InvalidTarget("the URL has no host")
    try:
        host = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        raise _InvalidTarget("the host is not a valid name") from None
    path = _quote(parts.path or "/") + (f"?{_quote(parts.query)}" if parts.query else "")
    return _Target(scheme, host, port, path)


def _quote(text: str) -> str:
    # What may appear unescaped in a path or query stays as it is (existing %XX escapes too); anything else is escaped.
    return quote(text, safe="!$&'()*+,;=:@/?%~-._")


def _request_headers(target: _Target, headers: Mapping[str, str]) -> list[tuple[str, str]]:
    # Identity encoding: the snippet is the body's first bytes as sent, never a decompressed stream.
    given = [(name, value) for name, value in headers.items() if name.lower() not in _SET_HERE]
    return [("Host", target.authority), ("Accept-Encoding", "identity"), *given]


def _header(response: httpcore.Response, name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in response.headers if key.lower() == name]
    return ", ".join(values) if values else None


def _describe(error: Exception) -> str:
    kinds: dict[type[Exception], str] = {
        httpcore.ConnectError: "could not connect",
        httpcore.RemoteProtocolError: "the receiver broke the HTTP exchange",
        httpcore.ReadError: "the connection failed while reading the answer",
        httpcore.WriteError: "the connection failed while sending",
    }
    kind = kinds.get(type(error), "the request failed")
    detail = str(error)
    return f"{kind}: {detail}" if detail else kind


def _origin(url: str) -> str:
    # Only scheme, host and port reach the log: a receiver's path or query may carry its own token.
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "an invalid URL"
    if not host:
        return "an invalid URL"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
