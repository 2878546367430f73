"""Running the app under uvicorn, with a shutdown that tells WebSocket clients first: the SQLite data dir's lock,
the services checked before the port opens, and `--workers N` processes on one port under a supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import ipaddress
import logging
import os
import select
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import uvicorn
from starlette.applications import Starlette

from rt._http import with_head_deadline
from rt.config import Settings
from rt.errors import RtError

log = logging.getLogger("rt.server")

# uvicorn's graceful wait (10 s) and the sessions' closes (2 + 2 s) fit in this; past it, the log says what is left.
SLOW_SHUTDOWN_S = 15.0
# Past this a shutdown is stuck, not slow (webhook sends get their timeout, then claims go back): the process exits.
# Everything accepted is in the store by then; a supervisor would kill it a little later anyway.
SHUTDOWN_DEADLINE_S = 40.0


class GracefulServer(uvicorn.Server):
    """Open WebSockets get `server.shutdown` and close 1001 before uvicorn closes connections."""

    def __init__(self, config: uvicorn.Config, app: Starlette, on_started: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._app = app
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Not cancelled: the process should be gone by then, whatever part of the shutdown it is in.
        loop = asyncio.get_running_loop()
        loop.call_later(SLOW_SHUTDOWN_S, log_pending_tasks, SLOW_SHUTDOWN_S)
        loop.call_later(SHUTDOWN_DEADLINE_S, give_up, SHUTDOWN_DEADLINE_S)
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            await runtime.sessions.shutdown()
        await super().shutdown(sockets)


def awaiting(task: asyncio.Task[Any], limit: int = 12) -> list[str]:
    """Where a task waits, outermost first: its coroutine, then what each awaits in turn (`Task.get_stack` gives only
    the outermost frame of a suspended coroutine)."""
    at: list[str] = []
    step: Any = task.get_coro()
    while step is not None and len(at) < limit:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            break
        at.append(f"{frame.f_code.co_qualname} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "ag_await", None) or getattr(step, "gi_yieldfrom", None)
        if type(step).__name__ == "async_generator_asend":  # it names no generator; contextlib's managers hold theirs
            step = getattr(frame.f_locals.get("self"), "gen", None)
    return at


def pending_tasks() -> list[dict[str, Any]]:
    """Every task the event loop still holds, each with where it waits."""
    return [{"name": task.get_name(), "at": awaiting(task)} for task in asyncio.all_tasks()]


def log_pending_tasks(after_s: float) -> None:
    log.warning("shutdown still running", extra={"after_s": after_s, "tasks": pending_tasks()})


def give_up(after_s: float) -> None:
    log.error("shutdown did not finish; exiting now", extra={"after_s": after_s, "tasks": pending_tasks()})
    logging.shutdown()
    os._exit(1)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_warnings(settings: Settings) -> list[str]:
    """What an operator must hear before the first client connects."""
    warnings = []
    if not _loopback(settings.host) and not settings.trusted_proxies:
        warnings.append(
            f"rt listens on {settings.host} and RT_TRUSTED_PROXIES is empty: without a TLS-terminating proxy in "
            "front, API keys, request signatures and WebSocket tokens cross the network in clear text"
        )
    try:
        mode = stat.S_IMODE(settings.data_path.stat().st_mode)
    except OSError:
        mode = 0  # not there yet: it is created 0700
    if mode & 0o077:
        warnings.append(
            f"the data dir {settings.data_path} is open to other users (mode {mode:04o}); "
            f"it holds the store and may hold the pepper and secret key: chmod 700 {settings.data_path}"
        )
    return warnings


def _config(app: Starlette, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=with_head_deadline(settings.header_timeout_s),
        proxy_headers=False,  # X-Forwarded-For is believed only from RT_TRUSTED_PROXIES, by rt itself
        access_log=False,  # it would print query strings, which may hold WebSocket tokens
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
        ws="rt.session.wire:RtWebSocketProtocol",  # uvicorn's sans-I/O protocol, its transport handed to the session
        ws_per_message_deflate=False,  # ticks are small; deflate doubles the CPU and memory per connection
        ws_max_size=64 * 1024,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )


def _fewer_collections() -> None:
    # Fewer, later collections: full passes over every connection's objects were the fan-out's worst pauses.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    # The store's thread (aiosqlite) waits for the GIL while the event loop fans out; at Python's default 5 ms a
    # command's few round trips to it cost tens of milliseconds under load.
    sys.setswitchinterval(0.0005)


def serve(app: Starlette, settings: Settings) -> None:
    for warning in startup_warnings(settings):
        log.warning(warning)
    _fewer_collections()
    GracefulServer(_config(app, settings), app).run()


# One process per SQLite data dir


class DataDirInUse(RtError):
    status, code = 409, "DATA_DIR_IN_USE"


@dataclass
class DataDirLock:
    """An exclusive flock on DATA_DIR/rt.lock, held while the process lives (the kernel drops it when it ends, even
    on kill -9). The file holds the holder's pid, for the message another process shows."""

    path: Path
    file: IO[str]

    def release(self) -> None:
        self.file.close()


def sqlite_dir(settings: Settings) -> Path | None:
    """The directory of the SQLite store the settings name, or None for a store many processes share."""
    url = settings.store_url
    if not url.startswith("sqlite:///"):
        return None
    return Path(url.removeprefix("sqlite:///")).resolve().parent


def hold_data_dir(settings: Settings) -> DataDirLock | None:
    """Take the SQLite data dir for this process, or raise DataDirInUse naming the pid that holds it. SQLite is one
    server's store: a second server would keep its own books over the same rows. None with PostgreSQL."""
    directory = sqlite_dir(settings)
    if directory is None:
        return None
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "rt.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    file = os.fdopen(fd, "r+")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = file.read().strip() or "unknown"
        file.close()
        raise DataDirInUse(
            f"the data dir {directory} is in use by another rt serve (pid {holder}): SQLite serves one process. "
            "Stop that one, pass another --data-dir, or run several instances on PostgreSQL (RT_DATABASE_URL)"
        ) from None
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    return DataDirLock(path, file)


# The services, checked before the port opens

SERVICE_CHECK_TIMEOUT_S = 5.0


class ServiceUnreachable(RtError):
    status, code = 503, "SERVICE_UNAVAILABLE"


def masked(url: str) -> str:
    """A URL as it may be shown: its password (in the userinfo or a `password` query parameter) replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in {"password", "pass"} else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {SERVICE_CHECK_TIMEOUT_S:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def _check_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url, timeout=SERVICE_CHECK_TIMEOUT_S)
    await connection.close(timeout=SERVICE_CHECK_TIMEOUT_S)


async def _check_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(
        url,
        socket_connect_timeout=SERVICE_CHECK_TIMEOUT_S,
        socket_timeout=SERVICE_CHECK_TIMEOUT_S,
        retry_on_timeout=False,
    )
    try:
        await client.ping()
    finally:
        await client.aclose()


async def check_services(settings: Settings) -> None:
    """Reach PostgreSQL (when the store is there) and Redis (when set) once, or raise ServiceUnreachable naming the
    service and the URL tried (password masked), within a few seconds: a server that cannot reach them must not
    open its port and answer 503 to everything."""
    checks: list[tuple[str, str, Callable[[str], Any]]] = []
    if settings.store_url.startswith(("postgresql://", "postgres://")):
        checks.append(("PostgreSQL", settings.store_url, _check_postgres))
    if settings.redis_url:
        checks.append(("Redis", settings.redis_url, _check_redis))
    for name, url, check in checks:
        try:
            await asyncio.wait_for(check(url), SERVICE_CHECK_TIMEOUT_S + 1)
        except Exception as exc:
            raise ServiceUnreachable(f"cannot reach {name} at {masked(url)}: {_reason(exc)}") from None


# --workers N: N processes on one port


@dataclass
class _Worker:
    index: int
    sock: socket.socket
    pid: int = 0
    ready_fd: int = -1  # the parent's end of the pipe the worker writes one byte to once it serves
    ready: bool = False
    backoff: float = 0.5
    restart_at: float | None = None


def listen(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address, SO_REUSEPORT: the kernel spreads new connections over them, one
    socket per worker. A port another process already listens on is refused first, as a single server's is."""
    (family, kind, proto, _, address), *_ = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise RtError(f"cannot listen on {host}:{port}: {exc.strerror}", code="ADDRESS_IN_USE") from None
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address if not sockets else sockets[0].getsockname())
        sock.listen(2048)
        sock.set_inheritable(True)
        sockets.append(sock)
    return sockets


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker `index`'s settings: its own metrics port (RT_METRICS_PORT + index) and instance name; only worker 0
    bootstraps the first key, so it is printed once."""
    changes: dict[str, Any] = {"bootstrap": settings.bootstrap and index == 0}
    if settings.metrics_port:
        changes["metrics_port"] = settings.metrics_port + index
    if getattr(settings, "instance_id", ""):
        changes["instance_id"] = f"{settings.instance_id}-{index}"
    return settings.replace(**changes)


_SUPERVISED = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}


@dataclass
class Supervisor:
    """The parent of `rt serve --workers N`: it binds the port, forks the workers, restarts one that dies (backing
    off while it keeps dying), forwards SIGTERM and SIGINT as SIGTERM (a graceful stop; asked again a second later, it
    kills them) and exits once every worker has stopped. Worker 0 starts first, the others once it serves; a worker that
    fails before they all first served stops them all."""

    settings: Settings
    make_app: Callable[[Settings], Starlette]
    count: int
    workers: list[_Worker] = field(default_factory=list)
    stopping: int = 0  # signals received
    failed: bool = False
    started: bool = False  # every worker has served once
    _wake_r: int = -1
    _wake_w: int = -1
    _first_signal: float = 0.0

    STOP_TIMEOUT_S = 30.0
    REPEAT_S = 1.0
    MAX_BACKOFF_S = 10.0

    def run(self) -> int:
        sockets = listen(self.settings.host, self.settings.port, self.count)
        self.workers = [_Worker(i, sock) for i, sock in enumerate(sockets)]
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake_r, self._wake_w = wake_r, wake_w
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        for warning in startup_warnings(self.settings):
            log.warning(warning)
        # The first worker starts alone: it applies the store's migrations and bootstraps the first key before the
        # others open the store, and a configuration every worker would fail on fails once.
        self._spawn(self.workers[0])
        deadline: float | None = None
        while True:
            self._reap()
            alive = [w for w in self.workers if w.pid]
            if self.stopping and not alive:
                break
            now = time.monotonic()
            if self.stopping:
                deadline = deadline or now + self.STOP_TIMEOUT_S
                if now >= deadline:
                    log.error("workers did not stop in time; killing them", extra={"after_s": self.STOP_TIMEOUT_S})
                    self._signal_all(signal.SIGKILL)
                    deadline = now + self.STOP_TIMEOUT_S
            else:
                for worker in self.workers:
                    if not worker.pid and worker.restart_at is not None and now >= worker.restart_at:
                        self._spawn(worker)
            waits = [w.restart_at - now for w in self.workers if not w.pid and w.restart_at is not None]
            if deadline is not None:
                waits.append(deadline - now)
            timeout = max(0.0, min(waits)) if waits else None
            pipes = [w.ready_fd for w in self.workers if w.ready_fd >= 0]
            readable, _, _ = select.select([wake_r, *pipes], [], [], timeout)
            for fd in readable:
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 512)
                else:
                    self._on_ready(fd)
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
        for worker in self.workers:
            worker.sock.close()
        return 1 if self.failed else 0

    def _on_signal(self, signum: int, _frame: Any) -> None:
        now = time.monotonic()
        if not self.stopping:
            self.stopping, self._first_signal = 1, now
            log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
            self._signal_all(signal.SIGTERM)
        elif now - self._first_signal >= self.REPEAT_S:
            # Asked again: stop now. One signal sent at once to the process and to its group is not asking twice.
            log.warning("killing workers", extra={"signal": signal.Signals(signum).name})
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers:
            if worker.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, sig)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart_at = None
        ready_r, ready_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals wait until the parent knows the new pid, and the worker has its own handlers: neither runs the
        # other's.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISED)
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(ready_r)
            code = 1
            try:
                code = self._work(worker, ready_w)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("worker failed", extra={"worker": worker.index})
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
        os.set_blocking(ready_r, False)
        worker.pid, worker.ready_fd, worker.ready = pid, ready_r, False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISED)
        log.info("worker started", extra={"worker": worker.index, "pid": pid})

    def _work(self, worker: _Worker, ready_w: int) -> int:
        parent = os.getppid()
        for sig in _SUPERVISED:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SUPERVISED)
        os.close(self._wake_r)
        os.close(self._wake_w)
        for other in self.workers:
            if other is not worker:
                other.sock.close()
                if other.ready_fd >= 0:
                    os.close(other.ready_fd)
        _die_with(parent)
        settings = worker_settings(self.settings, worker.index)
        app = self.make_app(settings)
        _fewer_collections()

        def started() -> None:
            os.write(ready_w, b"1")
            os.close(ready_w)

        server = GracefulServer(_config(app, settings), app, on_started=started)
        server.run(sockets=[worker.sock])
        return 0 if server.started else 3

    def _on_ready(self, fd: int) -> None:
        worker = next(w for w in self.workers if w.ready_fd == fd)
        with contextlib.suppress(BlockingIOError):
            if os.read(fd, 1):
                worker.ready, worker.backoff = True, 0.5
                if worker.index == 0 and not self.started and not self.stopping:
                    for rest in self.workers[1:]:
                        if not rest.pid:
                            self._spawn(rest)
                if not self.started and all(w.ready for w in self.workers):
                    self.started = True
                    log.info("workers serving", extra={"workers": len(self.workers), "port": self.settings.port})
                return
        os.close(fd)  # the worker ended before it served: its exit is reaped next
        worker.ready_fd = -1

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self.workers if w.pid == pid), None)
            if worker is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            served, worker.pid = worker.ready, 0
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
                worker.ready_fd = -1
            if self.stopping:
                # uvicorn ends a worker it stopped by raising the signal again once it has shut down.
                if code not in (0, -signal.SIGTERM, -signal.SIGINT):
                    self.failed = True
                log.info("worker stopped", extra={"worker": worker.index, "pid": pid, "exit": code})
            elif not self.started and not served:
                log.error(
                    "worker failed to start; stopping the others",
                    extra={"worker": worker.index, "pid": pid, "exit": code},
                )
                self.failed = True
                self.stopping += 1
                self._signal_all(signal.SIGTERM)
            else:
                worker.restart_at = time.monotonic() + worker.backoff
                log.warning(
                    "worker exited; restarting it",
                    extra={"worker": worker.index, "pid": pid, "exit": code, "restart_in": worker.backoff},
                )
                worker.backoff = min(worker.backoff * 2, self.MAX_BACKOFF_S)


def _die_with(parent: int) -> None:
    """On Linux a worker gets SIGTERM when the supervisor dies (kill -9 included), instead of serving on orphaned."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
