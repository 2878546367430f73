"""`rt watch`: stream channels to the terminal, saying on stderr what it connects to and why a connection fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rt import wire
from rt.cli import CliError, error_json
from rt.client import ApiError, Client
from rt.client.stream import Retry, StreamClosed, StreamUnavailable
from rt.errors import RtError
from rt.session.protocol import channel_scope

MAX_BACKOFF = 5.0
_FIELDS = ("symbol", "side", "quantity", "status", "bid", "ask", "last", "realized_pnl", "reason", "level", "check")


def check_channels(channels: tuple[str, ...]) -> None:
    for channel in channels:
        try:
            channel_scope(channel)
        except RtError as exc:
            raise CliError("UNKNOWN_CHANNEL", exc.detail) from None


def check_url(url: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise CliError("BAD_URL", f"--url (RT_URL) is the server's base URL, like http://127.0.0.1:8080, not {url!r}")


def line(message: dict[str, Any]) -> str:
    kind = message.get("type")
    channel = message.get("channel", "")
    if kind == "event":
        data = message.get("data") or {}
        fields = " ".join(f"{k}={data[k]}" for k in _FIELDS if k in data)
        return f"{channel:<16} #{message.get('seq', ''):<6} {message.get('event', ''):<24} {fields}"
    if kind == "snapshot":
        reset = " (reset)" if message.get("reset") else ""
        return f"{channel:<16} snapshot at seq {message.get('seq')}{reset}"
    return f"{kind}: {channel}" if channel else str(kind)


_KEY_GONE = frozenset({"API_KEY_REVOKED", "API_KEY_INVALID"})


def server_error(message: dict[str, Any]) -> tuple[CliError, bool]:
    """An error frame as the CLI's error, and whether it ends the watch: a refused subscription (scope, unknown
    symbol ...) would print nothing forever."""
    error = message.get("error") or {}
    code, detail = str(error.get("code") or "ERROR"), str(error.get("detail") or "")
    request_id = str(message.get("id") or "")
    if request_id.startswith("sub-"):
        channel = request_id.removeprefix("sub-")
        return CliError(code, f"the server refused {channel} ({code}): {detail}"), True
    # A revoked or unknown key would only be refused again on every reconnect: that ends the watch too.
    return CliError(code, f"the server says {code}: {detail}"), code in _KEY_GONE


def notice(error: CliError, *, as_json: bool) -> str:
    """A server error that does not end the watch, for stderr in the CLI's error format."""
    if as_json:
        return error_json(error.code, error.message)
    return f"rt watch: {error.message}"


async def watch(
    url: str,
    key: str,
    channels: tuple[str, ...],
    *,
    as_json: bool,
    count: int,
    max_attempts: int,
    say: Callable[[str], None],
) -> None:
    """Print each message on stdout and server errors through `say`; stop after `count` events, or raise CliError."""

    def retrying(retry: Retry) -> None:
        of = f" of {max_attempts}" if max_attempts else ""
        say(f"rt watch: attempt {retry.attempt}{of} failed: {retry.reason}; retrying in {retry.delay:.1f} s")

    seen = 0
    async with Client(url, key) as client:
        stream = client.stream(*channels, max_attempts=max_attempts or None, on_retry=retrying, max_backoff=MAX_BACKOFF)
        say(f"rt watch: connecting to {url} ({stream.url}) for {', '.join(channels)} ...")
        try:
            async for message in stream:
                # stdout is the stream only: `rt watch ... | jq` never sees an error frame.
                if message.get("type") == "error":
                    error, refused = server_error(message)
                    if refused:
                        raise error
                    say(notice(error, as_json=as_json))
                    continue
                click.echo(wire.dumps(message).decode() if as_json else line(message))
                if message.get("type") == "event":
                    seen += 1
                    if count and seen >= count:
                        return
        except StreamUnavailable as exc:
            raise CliError("UNAVAILABLE", str(exc)) from None
        except StreamClosed as exc:
            raise CliError("CLOSED", str(exc)) from None
        except ApiError as exc:
            raise CliError(exc.code, f"{exc.status} {exc.code}: {exc.detail}") from None
        finally:
            await stream.close()
