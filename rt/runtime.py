"""The process's parts, built once from Settings and shared by the server and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from rt.alerts.desk import AlertDesk
from rt.api.idempotency import Idempotency
from rt.api.validations import Validations
from rt.auth import tiers
from rt.auth.audit import AuditLog
from rt.auth.guard import Guard
from rt.auth.keys import KeyHasher
from rt.auth.limiter import Limiter, open_limiter
from rt.auth.manage import IssuedKey, KeyManager
from rt.auth.network import Network, parse_networks
from rt.auth.tokens import TokenStore, open_tokens
from rt.auth.usage import UsageMeter
from rt.auth.vault import Box, load_pepper, load_secret_key
from rt.bus import Bus, open_bus
from rt.channels.hub import Hub
from rt.config import ConfigError, Settings
from rt.coord import TickChannel, instance_id, open_coord
from rt.coord.market import MARKET, Market
from rt.coord.roles import Roles
from rt.engine.engine import Engine, EngineConfig
from rt.exchanges.candles import Candles
from rt.exchanges.feed import DEFAULT_PRICES, MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.session.manager import Sessions
from rt.store import AccountExists, Meta, Store, VenueRecords, open_store
from rt.strategies.runner import Runner
from rt.webhooks.manage import WebhookManager

if TYPE_CHECKING:
    from rt.exchanges.ccxt_exchange import CcxtExchange

log = logging.getLogger("rt.runtime")


@dataclass
class Runtime:
    settings: Settings
    store: Store
    limiter: Limiter
    audit: AuditLog
    usage: UsageMeter
    keys: KeyManager
    guard: Guard
    tiers: dict[str, tiers.Tier]
    trusted_proxies: tuple[Network, ...]
    bus: Bus
    engine: Engine
    feed: MarketFeed
    idempotency: Idempotency
    tokens: TokenStore
    hub: Hub
    runner: Runner
    box: Box
    instance_id: str
    roles: Roles
    market: Market
    webhooks: WebhookManager
    alerts: AlertDesk
    candles: Candles
    sessions: Sessions = field(init=False)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    validations: Validations = field(default_factory=Validations)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self)

    def spawn(self, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def stop_roles(self) -> None:
        """Give up every role first (a graceful stop hands them over at once), then stop the rest."""
        for task in [t for t in self.tasks if t.get_name() == "roles"]:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.audit.flush()
        await self.usage.flush()


def _decimal(value: str, name: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ConfigError(f"{name}: {value!r} must be a finite number >= 0")
    return number


def _prices(items: tuple[str, ...]) -> dict[str, Decimal]:
    if not items:
        return dict(DEFAULT_PRICES)
    prices = {}
    for item in items:
        symbol, _, price = item.partition("=")
        if "/" not in symbol or not price:
            raise ConfigError(f"RT_PAPER_SYMBOLS: {item!r} is not SYMBOL=PRICE, e.g. BTC/USDT=65000")
        prices[symbol.strip().upper()] = _decimal(price, "RT_PAPER_SYMBOLS")
    return prices


def _market(settings: Settings) -> tuple[MarketFeed, PaperExchange, EngineConfig]:
    feed = MarketFeed(
        _prices(settings.paper_symbols),
        seed=None if settings.paper_seed < 0 else settings.paper_seed,
        interval=settings.paper_tick_ms / 1000,
        volatility=float(_decimal(settings.paper_volatility, "RT_PAPER_VOLATILITY")),
    )
    paper = PaperExchange(
        feed,
        _decimal(settings.paper_fee, "RT_PAPER_FEE"),
        _decimal(settings.paper_slippage_bps, "RT_PAPER_SLIPPAGE_BPS"),
    )
    leverage = _decimal(settings.leverage, "RT_LEVERAGE")
    if leverage <= 0:
        raise ConfigError("RT_LEVERAGE must be > 0")
    config = EngineConfig(starting_balance=_decimal(settings.paper_balance, "RT_PAPER_BALANCE"), leverage=leverage)
    return feed, paper, config


def _venues(paper: PaperExchange, settings: Settings) -> Venues:
    if any(name.lower() == paper.id for name in settings.paper_venues):
        raise ConfigError(f"RT_PAPER_VENUES: {paper.id!r} is always served; list other exchange ids, such as binance")
    try:
        return Venues(paper, (name.lower() for name in settings.paper_venues))
    except ValueError as exc:
        raise ConfigError(f"RT_PAPER_VENUES: {exc} (an exchange id such as binance)") from None


async def _account_venues(store: VenueRecords, box: Box, venues: Venues) -> list[CcxtExchange]:
    """The venues added with `rt venues add`: simulated ones (`--paper`) served by the paper venue, real ones through
    ccxt, which is imported only when there are some (that takes a second)."""
    records = []
    for record in await store.list_venues():
        if not record.options.get("paper"):
            records.append(record)
            continue
        try:
            venues.add_simulated(record.account_id, record.exchange)
        except ValueError:
            log.error("venue not loaded", extra={"exchange": record.exchange, "account_id": record.account_id})
    if not records:
        return []
    from rt.exchanges.ccxt_exchange import venues_from

    made = venues_from(records, box)
    for venue in made:
        venues.add(venue.account_id, venue)
    return made


def _one_market(
    feed: MarketFeed, ticks: TickChannel, roles: Roles, engine: Engine, paper: PaperExchange, *, shared: bool
) -> Market:
    """The market role. Its holder steps the feed and does the tick work once for every instance: protective closes,
    stored marks and resting paper fills. Alone (no Redis) this process always holds it, and nothing changes."""

    def stand_down() -> None:
        engine.protects = False
        paper.matching = False

    def before_tick() -> None:
        # A process that was paused past its lease hears the new holder's ticks before its renewal finds out.
        if shared and engine.protects and not roles.held(MARKET):
            stand_down()

    market = Market(feed, ticks, before_tick)

    async def gained(token: int) -> None:
        engine.protects = True
        paper.matching = True
        if shared:
            # Another instance held the market until now: its books and resting orders are in the store.
            await engine.refresh_all()
        market.lead(token)

    async def lost() -> None:
        if shared:
            stand_down()
        await market.follow()

    if shared:
        stand_down()
    roles.role(MARKET, gained, lost)
    return market


# (meta name, setting, what it is, where a generated one lives, what it made) for each secret every process on one
# store must share.
_SECRETS = (
    ("key_pepper_fingerprint", "RT_KEY_PEPPER", "pepper", "DATA_DIR/pepper", "API keys were made"),
    (
        "secret_key_fingerprint",
        "RT_SECRET_KEY",
        "secret key",
        "DATA_DIR/secret.key",
        "signing secrets and venue credentials were sealed",
    ),
)


def fingerprint(secret: bytes, name: str) -> str:
    """A stored stand-in for a secret: HMAC-SHA256 of a fixed label keyed by it, which tells two secrets apart and
    gives nothing of either away."""
    return hmac.new(secret, f"rt store fingerprint: {name}".encode(), hashlib.sha256).hexdigest()


async def claim_secrets(store: Meta, pepper: bytes, secret_key: bytes) -> None:
    """The store remembers the pepper and the secret key it was first opened with (a store from before this takes the
    first ones that open it); a process with other ones raises ConfigError: its keys would answer 401 everywhere
    and what it seals no other process could open."""
    for (name, env, what, file, made), secret in zip(_SECRETS, (pepper, secret_key), strict=True):
        mine = fingerprint(secret, name)
        if await store.claim(name, mine) != mine:
            raise ConfigError(
                f"this store's {made} with another {what}: set {env} as the other instances have it "
                f"(a {what} generated into {file} is not shared)"
            )


async def check_secrets(settings: Settings) -> None:
    """What open_runtime checks of the secrets, on its own: `rt serve` refuses with one line before it starts."""
    data_dir = settings.data_path
    pepper = load_pepper(settings.key_pepper, data_dir)
    secret_key = load_secret_key(settings.secret_key, data_dir)
    store = await open_store(settings.store_url)
    try:
        await claim_secrets(store, pepper, secret_key)
    finally:
        await store.close()


@dataclass
class _Configured:
    """What open_runtime makes of the settings alone, before it opens anything."""

    tier_table: dict[str, tiers.Tier]
    trusted: tuple[Network, ...]
    feed: MarketFeed
    paper: PaperExchange
    engine_config: EngineConfig
    venues: Venues


def _configured(settings: Settings) -> _Configured:
    try:
        tier_table = tiers.load(settings.tier_limits)
        trusted = parse_networks(settings.trusted_proxies, "RT_TRUSTED_PROXIES")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:
        raise ConfigError(f"RT_TRUSTED_PROXIES: {exc}") from None
    feed, paper, engine_config = _market(settings)
    venues = _venues(paper, settings)
    if settings.lease_ttl_ms <= 0:
        raise ConfigError("RT_LEASE_TTL_MS must be > 0")
    return _Configured(tier_table, trusted, feed, paper, engine_config, venues)


def check_settings(settings: Settings) -> None:
    """What open_runtime checks of the settings alone (numbers, symbols, venue names, proxies, tiers): ConfigError
    naming the setting, with nothing opened, so `rt serve` refuses with one line before it starts."""
    _configured(settings)


@contextlib.asynccontextmanager
async def open_runtime(settings: Settings, *, background: bool = False) -> AsyncIterator[Runtime]:
    """Open the store and limiter; with background=True also start the engine, the market and the flushers."""
    configured = _configured(settings)
    tier_table, trusted = configured.tier_table, configured.trusted
    feed, paper, engine_config = configured.feed, configured.paper, configured.engine_config
    venues = configured.venues
    data_dir = settings.data_path
    pepper = load_pepper(settings.key_pepper, data_dir)
    secret_key = load_secret_key(settings.secret_key, data_dir)
    hasher = KeyHasher(pepper)
    box = Box(secret_key)
    store = await open_store(settings.store_url)
    try:
        await claim_secrets(store, pepper, secret_key)
    except BaseException:
        await store.close()
        raise
    limiter = open_limiter(settings.redis_url, settings.redis_prefix)
    audit_log = AuditLog(store)
    usage = UsageMeter(store)
    bus = open_bus(settings.redis_url, settings.redis_prefix)
    engine = Engine(store, bus, venues, engine_config)
    instance = instance_id(settings.instance_id)
    leases, ticks = open_coord(settings.redis_url, settings.redis_prefix, instance)

    async def store_answers() -> bool:
        # An instance that cannot reach the store cannot do the tick work, run strategies or sweep: it hands the
        # roles to one that can.
        await store.ping()
        return True

    roles = Roles(leases, settings.lease_ttl_ms, fit=store_answers)
    idempotency = Idempotency(engine)
    runtime = Runtime(
        settings=settings,
        store=store,
        limiter=limiter,
        audit=audit_log,
        usage=usage,
        keys=KeyManager(store, hasher, box, audit_log),
        guard=Guard(settings, store, limiter, hasher, box, tier_table, audit_log, usage),
        tiers=tier_table,
        trusted_proxies=trusted,
        bus=bus,
        engine=engine,
        feed=feed,
        idempotency=idempotency,
        tokens=open_tokens(settings.redis_url, settings.redis_prefix),
        hub=Hub(bus, held_limit=settings.ws_queue),
        runner=Runner(engine, store),
        box=box,
        instance_id=instance,
        roles=roles,
        market=_one_market(feed, ticks, roles, engine, paper, shared=bool(settings.redis_url)),
        webhooks=WebhookManager(store, box, bus, engine, settings, instance),
        alerts=AlertDesk(store, engine, idempotency, limiter, hasher, audit_log, settings),
        candles=Candles(engine.venues, feed, bus),
    )
    try:
        if background:
            await bus.restore(store)
            runtime.spawn(audit_log.run(), "audit-flush")
            runtime.spawn(usage.run(), "usage-flush")
            runtime.spawn(runtime.idempotency.run_expiry(), "idempotency-expiry")
            runtime.spawn(runtime.hub.run(), "hub")
            runtime.spawn(runtime.candles.run(), "candle-volume")
            runtime.spawn(runtime.sessions.watch_revocations(), "revocations")
            runtime.spawn(runtime.sessions.run_clock(), "session-clock")
            runtime.spawn(store.maintain(), "store-maintenance")
            # Clients hear of a tick only once the engine has marked positions to it: a read of P&L shows that price.
            engine.ticks.after_mark(paper.id, runtime.hub.tick)
            if settings.metrics_port:
                from rt import metrics

                runtime.spawn(metrics.serve(runtime, settings.metrics_port), "metrics")
            await _account_venues(store, box, engine.venues)
            # The runner knows its strategies and listens for fills before the market starts moving.
            await runtime.runner.start(runtime.roles)
            runtime.spawn(runtime.runner.run_fills(), "strategy-fills")
            await asyncio.sleep(0)
            await engine.start()
            # Other processes on the same store write too: their events tell this engine which books to reload.
            runtime.spawn(engine.follow(), "engine-follow")
            await runtime.runner.reconcile()
            runtime.spawn(runtime.runner.run_clock(), "strategy-clock")
            runtime.runner.listen(engine.venues.all())
            # Every instance applies the market's steps; the one holding the role makes them.
            runtime.spawn(runtime.market.run(), "market-ticks")
            runtime.spawn(runtime.roles.run(), "roles")
            runtime.spawn(runtime.webhooks.run(), "webhooks")
        yield runtime
    finally:
        try:
            await runtime.validations.drain()  # positions answered pending_validation settle before the engine stops
            await runtime.stop_roles()
            await runtime.webhooks.close()
            await runtime.runner.close()
            await engine.close()
            await runtime.stop_tasks()
        finally:
            await runtime.tokens.close()
            await bus.close()
            await runtime.market.channel.close()
            await runtime.roles.leases.close()
            await limiter.close()
            await store.close()


async def bootstrap(runtime: Runtime) -> IssuedKey | None:
    """On an empty store: account `default` and one full-access pro_plus key. None when there was nothing to do."""
    if await runtime.store.count_accounts() > 0:
        return None
    try:
        account = await runtime.keys.create_account("default", actor="bootstrap")
    except AccountExists:
        return None  # another process bootstrapped this store at the same moment
    return await runtime.keys.create(account.id, "full", "pro_plus", name="bootstrap", actor="bootstrap")
