"""Settings: every one is a `rt serve` flag and an RT_* environment variable, declared once here."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt.errors import RtError


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("host", "RT_HOST", "127.0.0.1", str, "Interface to listen on."),
    Option("port", "RT_PORT", 8080, int, "TCP port to listen on."),
    Option(
        "workers",
        "RT_WORKERS",
        1,
        int,
        "Processes serving the port, each a full instance; above 1 needs PostgreSQL and Redis.",
    ),
    Option("data_dir", "RT_DATA_DIR", "./rt-data", str, "Directory for the SQLite store, pepper and secret key."),
    Option("database_url", "RT_DATABASE_URL", "", str, "Store URL; empty means SQLite at DATA_DIR/rt.db."),
    Option(
        "redis_url",
        "RT_REDIS_URL",
        "",
        str,
        "Redis URL; when set, rate limits, lockouts, WebSocket tokens and the event bus are shared.",
    ),
    Option("redis_prefix", "RT_REDIS_PREFIX", "rt", str, "Prefix of every Redis key rt writes."),
    Option(
        "instance_id",
        "RT_INSTANCE_ID",
        "",
        str,
        "This instance's name in leases, /v1/ready and logs; empty means `{hostname}-{pid}-{4 random hex}`.",
    ),
    Option(
        "lease_ttl_ms",
        "RT_LEASE_TTL_MS",
        3000,
        int,
        "Milliseconds a role's lease (the market, ...) lasts unless renewed; another instance takes over after it.",
    ),
    Option("key_pepper", "RT_KEY_PEPPER", "", str, "Pepper for API key hashes; empty means DATA_DIR/pepper.", True),
    Option(
        "secret_key",
        "RT_SECRET_KEY",
        "",
        str,
        "Key that encrypts secrets at rest; empty means DATA_DIR/secret.key.",
        True,
    ),
    Option(
        "bootstrap", "RT_BOOTSTRAP", True, _bool, "On an empty store, create account `default` and print a full key."
    ),
    Option(
        "trusted_proxies", "RT_TRUSTED_PROXIES", (), _list, "Proxies (IPs/CIDRs) whose X-Forwarded-For is believed."
    ),
    Option(
        "cors_origins", "RT_CORS_ORIGINS", (), _list, "Browser origins allowed by CORS and the WebSocket handshake."
    ),
    Option(
        "tier_limits",
        "RT_TIER_LIMITS",
        (),
        _list,
        "Override tier limits, e.g. `pro=600/40,starter=30/5` (per min/burst).",
    ),
    Option("lockout_threshold", "RT_LOCKOUT_THRESHOLD", 20, int, "Auth failures from one IP that trigger a lockout."),
    Option("lockout_window", "RT_LOCKOUT_WINDOW", 300, int, "Seconds over which auth failures are counted."),
    Option("lockout_seconds", "RT_LOCKOUT_SECONDS", 900, int, "How long a locked-out IP stays locked out."),
    Option("max_body_bytes", "RT_MAX_BODY_BYTES", 1_048_576, int, "Largest request body accepted (413 above)."),
    Option(
        "header_timeout_s",
        "RT_HEADER_TIMEOUT_S",
        20,
        int,
        "Seconds a connection has to send a request line and headers (408, or closed if silent; 0: no limit).",
    ),
    Option("log_level", "RT_LOG_LEVEL", "info", str, "debug, info, warning or error."),
    Option("paper_symbols", "RT_PAPER_SYMBOLS", (), _list, "Paper symbols and start prices, e.g. `BTC/USDT=65000`."),
    Option("paper_seed", "RT_PAPER_SEED", -1, int, "Seed of the simulated market's random walk (-1: random)."),
    Option("paper_tick_ms", "RT_PAPER_TICK_MS", 500, int, "Milliseconds between simulated ticks (0: no ticks)."),
    Option("paper_volatility", "RT_PAPER_VOLATILITY", "0.0005", str, "Std. deviation of one tick's log return."),
    Option("paper_fee", "RT_PAPER_FEE", "0.001", str, "Paper fee rate per fill (0.001 = 0.1%)."),
    Option("paper_slippage_bps", "RT_PAPER_SLIPPAGE_BPS", "0", str, "Paper slippage of market orders, basis points."),
    Option("paper_balance", "RT_PAPER_BALANCE", "100000", str, "Starting paper balance of a new account (USDT)."),
    Option(
        "paper_venues",
        "RT_PAPER_VENUES",
        (),
        _list,
        "Exchange ids the paper venue also answers to, simulated (dry run), e.g. `binance,kraken`.",
    ),
    Option(
        "tradyn_exchange",
        "RT_TRADYN_EXCHANGE",
        "paper",
        str,
        "The venue the Tradyn dialect (/v1/api) trades on.",
    ),
    Option(
        "validation_wait_ms",
        "RT_VALIDATION_WAIT_MS",
        1000,
        int,
        "How long POST /v1/positions waits for Cerberus and the venue before answering 202 pending_validation.",
    ),
    Option("leverage", "RT_LEVERAGE", "1", str, "Margin model: position notional / leverage is the margin used."),
    Option(
        "ws_queue",
        "RT_WS_QUEUE",
        1024,
        int,
        "Messages queued for a WebSocket client that is behind before it is closed (4008).",
    ),
    Option(
        "ws_stall_s",
        "RT_WS_STALL_S",
        3.0,
        float,
        "Seconds a WebSocket client may stay behind (its send buffer over 64 KiB) before it is closed (4008).",
    ),
    Option(
        "ws_heartbeat_s", "RT_WS_HEARTBEAT_S", 15, int, "Seconds of silence after which the server sends a heartbeat."
    ),
    Option(
        "ws_idle_s", "RT_WS_IDLE_S", 60, int, "A socket with no subscription that sends nothing this long is closed."
    ),
    Option("ws_max_per_key", "RT_WS_MAX_PER_KEY", 20, int, "Open WebSocket sessions allowed per API key."),
    Option("metrics_port", "RT_METRICS_PORT", 0, int, "Serve Prometheus /metrics on 127.0.0.1 on this port (0: off)."),
    Option(
        "webhook_allow_hosts",
        "RT_WEBHOOK_ALLOW_HOSTS",
        (),
        _list,
        "Webhook hosts exempt from the https and public-address rules, e.g. `127.0.0.1,hooks.internal`.",
    ),
    Option("webhook_timeout_s", "RT_WEBHOOK_TIMEOUT_S", 10.0, float, "Seconds a webhook receiver has to answer."),
    Option(
        "webhook_schedule",
        "RT_WEBHOOK_SCHEDULE",
        ("5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h"),
        _list,
        "Waits before each webhook retry (the last repeats), each with +-20% jitter.",
    ),
    Option(
        "webhook_give_up",
        "RT_WEBHOOK_GIVE_UP",
        "3d",
        str,
        "A delivery failing this long after its event fails for good; an endpoint failing this long is disabled.",
    ),
    Option("webhook_concurrency", "RT_WEBHOOK_CONCURRENCY", 4, int, "Deliveries in flight per endpoint per instance."),
    Option(
        "alert_dedupe_s",
        "RT_ALERT_DEDUPE_S",
        60,
        int,
        "An alert without an `id` whose body repeats within this many seconds is a retry of the first.",
    ),
    Option("alert_rate", "RT_ALERT_RATE", "60/10", str, "Alerts one hook may receive per minute / burst."),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: str = "./rt-data"
    database_url: str = ""
    redis_url: str = ""
    redis_prefix: str = "rt"
    instance_id: str = ""
    lease_ttl_ms: int = 3000
    key_pepper: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    bootstrap: bool = True
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    tier_limits: tuple[str, ...] = ()
    lockout_threshold: int = 20
    lockout_window: int = 300
    lockout_seconds: int = 900
    max_body_bytes: int = 1_048_576
    header_timeout_s: int = 20
    log_level: str = "info"
    paper_symbols: tuple[str, ...] = ()
    paper_seed: int = -1
    paper_tick_ms: int = 500
    paper_volatility: str = "0.0005"
    paper_fee: str = "0.001"
    paper_slippage_bps: str = "0"
    paper_balance: str = "100000"
    paper_venues: tuple[str, ...] = ()
    tradyn_exchange: str = "paper"
    validation_wait_ms: int = 1000
    leverage: str = "1"
    ws_queue: int = 1024
    ws_stall_s: float = 3.0
    ws_heartbeat_s: int = 15
    ws_idle_s: int = 60
    ws_max_per_key: int = 20
    metrics_port: int = 0
    webhook_allow_hosts: tuple[str, ...] = ()
    webhook_timeout_s: float = 10.0
    webhook_schedule: tuple[str, ...] = ("5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h", "8h")
    webhook_give_up: str = "3d"
    webhook_concurrency: int = 4
    alert_dedupe_s: int = 60
    alert_rate: str = "60/10"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'rt.db'}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then RT_* variables, then explicit overrides (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw = env.get(option.env)
            if raw is not None:
                try:
                    values[option.name] = option.parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{option.env}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class ConfigError(RtError):
    status = 500
    code = "CONFIG_INVALID"
