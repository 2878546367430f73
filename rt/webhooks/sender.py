"""One POST of a delivery to its receiver, and what came of it.

The destination is checked again just before connecting and the connection goes to the address that was checked,
so a name that now resolves to a private address (DNS rebinding) is never reached. Connections are pooled per host
name, not per address: TLS verified for one name is never reused for another that shares its address."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from rt.records.webhooks import RESPONSE_SNIPPET
from rt.webhooks import ssrf

log = logging.getLogger("rt.webhooks")

MAX_CONNECTIONS = 512
MAX_KEEPALIVE = 128
KEEPALIVE_S = 30.0


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


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx takes no network backend; its pool is rebuilt the way it builds it, with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(),
        )


class Sender:
    """POSTs deliveries: never follows a redirect, never uses a proxy from the environment, gives each attempt
    `timeout_s` in all, and never raises (but CancelledError): every outcome is an Answer."""

    def __init__(
        self, allow_hosts: Sequence[str], timeout_s: float, *, resolve: ssrf.Resolver = ssrf.system_resolver
    ) -> None:
        self.allow_hosts = tuple(allow_hosts)
        self.timeout_s = timeout_s
        self._resolve = resolve
        limits = httpx.Limits(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE, keepalive_expiry=KEEPALIVE_S
        )
        self._client = httpx.AsyncClient(
            transport=_PinnedTransport(limits),
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout_s),
        )

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
        except httpx.TimeoutException:
            return failed(f"no answer within the timeout of {self.timeout_s:g} s")
        except httpx.HTTPError as e:
            return failed(_describe(e))
        except Exception as e:
            log.warning("webhook send to %s failed unexpectedly: %s", _origin(url), type(e).__name__)
            return failed(f"unexpected failure: {type(e).__name__}")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], started: float) -> Answer:
        target = httpx.URL(url)
        host = target.host
        if ssrf.is_allowed(host, self.allow_hosts):
            pin = _Pin(host, None)
        else:
            port = target.port or (443 if target.scheme == "https" else 80)
            checked = await ssrf.safe_addresses(host, port, self.allow_hosts, resolve=self._resolve)
            pin = _Pin(host, tuple(checked))
        sent = {"Accept-Encoding": "identity", **headers}
        token = _PIN.set(pin)
        try:
            async with self._client.stream("POST", target, content=body, headers=sent) as response:
                snippet = await _snippet(response)
        finally:
            _PIN.reset(token)
        code = response.status_code
        error = None
        if not 200 <= code < 300:
            error = f"answered {code}" + (" (redirects are not followed)" if 300 <= code < 400 else "")
        return Answer(code, _since(started), error, snippet, retry_after_s(response.headers.get("Retry-After")))


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


async def _snippet(response: httpx.Response) -> str:
    # At most four bytes a character in UTF-8: read no more than the snippet can hold, and leave the rest unread.
    wanted = RESPONSE_SNIPPET * 4
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= wanted:
            break
    return b"".join(chunks)[:wanted].decode("utf-8", errors="replace")[:RESPONSE_SNIPPET]


def _describe(error: httpx.HTTPError) -> str:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectError: "could not connect",
        httpx.RemoteProtocolError: "the receiver broke the HTTP exchange",
        httpx.ReadError: "the connection failed while reading the answer",
        httpx.WriteError: "the connection failed while sending",
    }
    kind = kinds.get(type(error), "the request failed")
    detail = str(error)
    return f"{kind}: {detail}" if detail else kind


def _origin(url: str) -> str:
    # Only scheme, host and port reach the log: a receiver's path or query may carry its own token.
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
