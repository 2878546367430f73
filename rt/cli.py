"""The `rt` command: serve, keys, accounts, venues, webhooks, audit. Tables for people, --json for scripts."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from rt import wire
from rt._table import render
from rt.auth import scopes as scope_names
from rt.auth.manage import IssuedKey
from rt.config import OPTIONS, Settings
from rt.errors import NotFound, RtError
from rt.records.accounts import Account, ApiKey, VenueRecord
from rt.records.webhooks import EndpointStatus, WebhookDelivery, WebhookEndpoint
from rt.runtime import Runtime, check_secrets, check_settings, open_runtime

T = TypeVar("T")


class CliError(click.ClickException):
    """A failed command: `code` is stable (the API's error codes where there is one), the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class BadSetting(CliError):
    """A setting `rt serve` cannot run with: one line naming it on stderr, exit 2, before anything starts."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__("CONFIG_INVALID", message)

    def show(self, file: Any = None) -> None:
        click.echo(f"rt: {self.format_message()}", err=True)


def error_json(code: str, message: str) -> str:
    return wire.dumps({"error": {"code": code, "message": message}}).decode()


class _Rt(click.Group):
    """With `--json` anywhere on the line, an error is one JSON object on stderr: {"error": {"code", "message"}}."""

    def main(  # type: ignore[override]
        self, args: list[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--json" not in argv or extra.get("standalone_mode") is False:
            return super().main(argv, prog_name, **extra)
        try:
            result = super().main(argv, prog_name, **{**extra, "standalone_mode": False})
        except click.ClickException as exc:
            code = exc.code if isinstance(exc, CliError) else "USAGE"
            click.echo(error_json(code, exc.format_message()), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo(error_json("ABORTED", "aborted"), err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def where(settings: Settings) -> str:
    """The store a command works on, as a person would look for it."""
    if settings.database_url:
        scheme, _, rest = settings.database_url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    return str(settings.data_path.resolve())


def _run(ctx: click.Context, work: Callable[[Runtime], Awaitable[T]], *, reads: bool = False) -> T:
    """Run `work` on the data dir. A command that only reads refuses a data dir that holds no store, rather than
    create one there; a command that writes says when it starts a new one."""
    settings = _settings(ctx)
    fresh = not settings.database_url and not (settings.data_path / "rt.db").exists()
    if fresh and reads:
        raise CliError(
            "NO_DATA_DIR",
            f"no rt data dir at {where(settings)}: pass --data-dir or set RT_DATA_DIR to the one `rt serve` uses "
            "(it is ./rt-data in the directory where the server started, unless RT_DATA_DIR says otherwise)",
        )
    if fresh:
        click.echo(f"rt: starting a new data dir at {where(settings)}", err=True)

    async def main() -> T:
        async with open_runtime(settings) as runtime:
            return await work(runtime)

    try:
        return asyncio.run(main())
    except RtError as exc:
        raise CliError(exc.code, f"{exc.code}: {exc.detail}") from None


def _emit(ctx: click.Context, as_json: bool, payload: Any, table: str, *, empty: str | None = None) -> None:
    """Print the result; an empty list also says on stderr which data dir held nothing."""
    click.echo(wire.dumps(payload).decode() if as_json else table)
    if empty is not None and not payload:
        click.echo(f"rt: no {empty} in {where(_settings(ctx))}", err=True)


def _store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`--data-dir` and `--database-url` after the command too, as `rt serve --data-dir` takes them."""

    def override(name: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
        def set_it(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
            if value is not None:
                ctx.obj = _settings(ctx).replace(**{name: value})

        return set_it

    fn = click.option(
        "--database-url", default=None, expose_value=False, callback=override("database_url"), help="Store URL."
    )(fn)
    return click.option(
        "--data-dir", default=None, expose_value=False, callback=override("data_dir"), help="Data directory."
    )(fn)


def _when(value: Any) -> str:
    return wire.rfc3339(value) if value is not None else "-"


@click.group(cls=_Rt)
@click.option(
    "--data-dir", envvar="RT_DATA_DIR", default="./rt-data", show_default=True, help="Data directory (RT_DATA_DIR)."
)
@click.option("--database-url", envvar="RT_DATABASE_URL", default="", help="Store URL (RT_DATABASE_URL).")
@click.version_option(package_name="rt")
@click.pass_context
def main(ctx: click.Context, data_dir: str, database_url: str) -> None:
    """rt: a self-hosted, WebSocket-first real-time trading gateway."""
    try:
        ctx.obj = Settings.from_env(data_dir=data_dir, database_url=database_url)
    except RtError as exc:
        raise CliError(exc.code, exc.detail) from None


def _serve_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(OPTIONS):
        kind: Any = {int: int, bool: bool}.get(type(option.default), str)
        fn = click.option(
            option.flag,
            option.name,
            envvar=option.env,
            default=None,
            type=kind,
            show_envvar=True,
            help=option.help + ("" if option.secret else f" [default: {_show(option.default)}]"),
        )(fn)
    return fn


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value) if value != "" else "unset"


@main.command()
@_serve_options
@click.pass_context
def serve(ctx: click.Context, /, **flags: Any) -> None:
    """Run the gateway: REST, WebSocket, the paper exchange, everything, in one process (or --workers N)."""
    from rt import logs
    from rt.app import create_app
    from rt.server import Supervisor, check_services, hold_data_dir, sqlite_dir
    from rt.server import serve as serve_app

    overrides = {}
    for option in OPTIONS:
        value = flags.get(option.name)
        if value is not None:
            overrides[option.name] = option.parse(value) if isinstance(value, str) else value
    try:
        settings = _settings(ctx).replace(**overrides)
        check_settings(settings)
    except RtError as exc:
        raise BadSetting(exc.detail) from None
    except ValueError as exc:
        raise BadSetting(str(exc)) from None
    workers = settings.workers
    if workers < 1:
        raise BadSetting(f"RT_WORKERS: {workers} is not a number of processes (1 or more)")
    if workers > 1 and (sqlite_dir(settings) is not None or not settings.redis_url):
        raise CliError(
            "WORKERS_NEED_SERVICES",
            f"--workers {workers} needs PostgreSQL (RT_DATABASE_URL=postgresql://...) and Redis (RT_REDIS_URL): "
            "SQLite serves one process, and without Redis each worker would keep its own events, WebSocket tokens "
            "and rate limits",
        )
    logs.configure(settings.log_level)
    try:
        lock = hold_data_dir(settings)  # held until this process ends
        asyncio.run(check_services(settings))
        asyncio.run(check_secrets(settings))
    except RtError as exc:
        raise CliError(exc.code, exc.detail) from None
    if workers == 1:
        serve_app(create_app(settings), settings)
    else:
        try:
            code = Supervisor(settings, create_app, workers).run()
        except RtError as exc:
            raise CliError(exc.code, exc.detail) from None
        if code:
            sys.exit(code)
    if lock is not None:
        lock.release()


# keys


@main.group()
def keys() -> None:
    """Create, list, revoke and rotate API keys."""


def _key_row(k: ApiKey) -> list[Any]:
    state = "revoked" if k.revoked_at else "active"
    return [
        k.id,
        k.prefix + "…",
        k.name or "-",
        k.tier,
        _scope_label(k.scopes),
        ",".join(k.allow_ips) or "any",
        state,
        _when(k.created_at),
        _when(k.last_used_at),
    ]


def _scope_label(granted: tuple[str, ...]) -> str:
    for preset, members in scope_names.PRESETS.items():
        if tuple(granted) == members:
            return preset
    return ",".join(granted)


def _issued(issued: IssuedKey, as_json: bool, replaces: str | None = None) -> None:
    from rt.api.keys import issued_json

    payload = issued_json(issued, replaces)
    if as_json:
        click.echo(wire.dumps(payload).decode())
        return
    record = issued.record
    click.echo(f"key id:          {record.id}" + (f" (replaces {replaces})" if replaces else ""))
    click.echo(f"account:         {record.account_id}")
    click.echo(f"tier / scopes:   {record.tier} / {_scope_label(record.scopes)}")
    click.echo(f"API key:         {issued.key}")
    click.echo(f"signing secret:  {issued.signing_secret}")
    click.echo("Store both now: they are not shown again.", err=True)


@keys.command("create")
@_store_options
@click.option("--account", "account", default="default", show_default=True, help="Account id or name.")
@click.option("--scopes", "scope_spec", required=True, help="Preset (read-only, trade-only, full) or scope,scope.")
@click.option("--tier", type=click.Choice(["starter", "b2b", "pro", "pro_plus"]), required=True)
@click.option("--allow-ips", default=None, help="Comma-separated IPs/CIDRs allowed to use the key.")
@click.option("--name", default="", help="A label for the key.")
@click.option("--test", is_flag=True, help="An rt_test_ key (simulated market only: paper and its aliases).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def keys_create(
    ctx: click.Context,
    account: str,
    scope_spec: str,
    tier: str,
    allow_ips: str | None,
    name: str,
    test: bool,
    as_json: bool,
) -> None:
    """Create a key; it is printed once."""

    async def work(rt: Runtime) -> IssuedKey:
        found = await _account(rt, account)
        return await rt.keys.create(found.id, scope_spec, tier, name=name, allow_ips=allow_ips, test=test, actor="cli")

    _issued(_run(ctx, work), as_json)


@keys.command("list")
@_store_options
@click.option("--account", "account", default=None, help="Account id or name (default: all).")
@click.option("--active", is_flag=True, help="Only keys that are not revoked.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, account: str | None, active: bool, as_json: bool) -> None:
    """List keys (never the keys themselves)."""
    from rt.api.keys import key_json

    async def work(rt: Runtime) -> list[ApiKey]:
        account_id = (await _account(rt, account)).id if account else None
        return await rt.keys.list(account_id, include_revoked=not active)

    records = _run(ctx, work, reads=True)
    _emit(
        ctx,
        as_json,
        [key_json(k) for k in records],
        render(
            ["id", "prefix", "name", "tier", "scopes", "allow_ips", "state", "created", "last used"],
            [_key_row(k) for k in records],
        ),
        empty="active keys" if active else "keys",
    )


@keys.command("revoke")
@_store_options
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Revoke a key; a running server refuses it within a second."""
    from rt.api.keys import key_json

    record = _run(ctx, lambda rt: rt.keys.revoke(key_id, actor="cli"))
    _emit(ctx, as_json, key_json(record), f"revoked {record.id} ({record.prefix}…) at {_when(record.revoked_at)}")


@keys.command("rotate")
@_store_options
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_rotate(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Issue a new key with the same settings and revoke the old one."""
    _issued(_run(ctx, lambda rt: rt.keys.rotate(key_id, actor="cli")), as_json, replaces=key_id)


# accounts


@main.group()
def accounts() -> None:
    """Create and list accounts."""


def _account_json(a: Account) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "parent_id": a.parent_id, "created_at": a.created_at}


async def _account(rt: Runtime, id_or_name: str) -> Account:
    found = await rt.store.find_account(id_or_name)
    if found is None:
        raise CliError("NOT_FOUND", f"no account {id_or_name!r} in {where(rt.settings)} (see `rt accounts list`)")
    return found


@accounts.command("create")
@_store_options
@click.argument("name")
@click.option("--parent", default=None, help="Parent account id or name (makes a sub-account).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def accounts_create(ctx: click.Context, name: str, parent: str | None, as_json: bool) -> None:
    """Create an account."""
    account = _run(ctx, lambda rt: rt.keys.create_account(name, parent, actor="cli"))
    _emit(ctx, as_json, _account_json(account), f"created account {account.id} ({account.name})")


@accounts.command("list")
@_store_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def accounts_list(ctx: click.Context, as_json: bool) -> None:
    """List accounts."""
    found = _run(ctx, lambda rt: rt.store.list_accounts(), reads=True)
    _emit(
        ctx,
        as_json,
        [_account_json(a) for a in found],
        render(
            ["id", "name", "parent", "created"],
            [[a.id, a.name, a.parent_id or "-", _when(a.created_at)] for a in found],
        ),
        empty="accounts",
    )


# venues


@main.group()
def venues() -> None:
    """Venues per account: real ones (through ccxt) and simulated ones (`--paper`: the paper market under a real
    exchange's id). `rt serve` connects them when it starts."""


def _venue_json(v: VenueRecord) -> dict[str, Any]:
    paper = bool(v.options.get("paper"))
    sandbox = bool(v.options.get("sandbox"))
    return {
        "account_id": v.account_id,
        "exchange": v.exchange,
        "paper": paper,
        "simulated": paper or sandbox,
        "sandbox": sandbox,
        "url": v.options.get("url"),
        "created_at": v.created_at,
    }


def _simulated_cell(v: VenueRecord) -> str:
    return "paper" if v.options.get("paper") else "sandbox" if v.options.get("sandbox") else "no"


def _ask(value: str | None, prompt: str) -> str:
    return value if value is not None else str(click.prompt(prompt, hide_input=True))


@venues.command("add")
@_store_options
@click.option("--account", "account", default="default", show_default=True, help="Account id or name.")
@click.option("--exchange", required=True, help="An exchange id: binance, kraken, coinbase, ... (ccxt's ids)")
@click.option("--api-key", envvar="RT_VENUE_API_KEY", default=None, help="The venue's API key (RT_VENUE_API_KEY).")
@click.option("--secret", envvar="RT_VENUE_SECRET", default=None, help="The venue's API secret (RT_VENUE_SECRET).")
@click.option("--password", envvar="RT_VENUE_PASSWORD", default="", help="The API passphrase, on venues that have one.")
@click.option("--sandbox", is_flag=True, help="Trade on the venue's test network (ccxt sandbox mode).")
@click.option("--url", default=None, help="Send the venue's API calls to this base URL (a self-hosted test venue).")
@click.option(
    "--paper",
    is_flag=True,
    help="A simulated venue: the paper market answers to this exchange id for the account (no credentials).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def venues_add(
    ctx: click.Context,
    account: str,
    exchange: str,
    api_key: str | None,
    secret: str | None,
    password: str,
    sandbox: bool,
    url: str | None,
    paper: bool,
    as_json: bool,
) -> None:
    """Add a venue, or replace it. Credentials (asked for when not given) are stored encrypted and never shown
    again; a `--paper` venue has none: its orders fill on the paper market and say `simulated: true`."""
    if paper:
        from rt.exchanges.alias import valid_id

        exchange = exchange.lower()
        if sandbox or url:
            raise CliError("BAD_REQUEST", "--paper takes no --sandbox or --url: the venue is the paper market")
        if not valid_id(exchange):
            raise CliError("BAD_REQUEST", f"{exchange!r} cannot name a simulated venue (an exchange id: binance, ...)")
        credentials: dict[str, str] = {}
        options: dict[str, Any] = {"paper": True}
    else:
        credentials = {
            "api_key": _ask(api_key, "Api key"),
            "secret": _ask(secret, "Secret"),
            "password": password,
        }
        options = {"sandbox": sandbox, "url": url}

    async def work(rt: Runtime) -> tuple[VenueRecord, bool]:
        found = await _account(rt, account)
        if not paper:
            from rt.exchanges.ccxt_exchange import check_venue

            try:
                await check_venue(exchange, sandbox=sandbox, url=url)
            except ValueError as exc:
                raise CliError("BAD_REQUEST", str(exc)) from None
        record = VenueRecord(
            account_id=found.id,
            exchange=exchange,
            sealed_credentials=rt.box.seal(wire.dumps(credentials).decode()),
            options=options,
            created_at=datetime.now(UTC),
        )
        replaced = await rt.store.put_venue(record)
        await rt.audit.write(
            "venue.replaced" if replaced else "venue.added",
            account_id=found.id,
            actor="cli",
            exchange=exchange,
            **options,
        )
        return record, replaced

    record, replaced = _run(ctx, work)
    if paper:
        verb = "replaced simulated venue" if replaced else "added simulated venue"
    else:
        verb = "replaced the credentials of venue" if replaced else "added venue"
    _emit(
        ctx,
        as_json,
        {**_venue_json(record), "replaced": replaced},
        f"{verb} {record.exchange} for account {record.account_id}; restart `rt serve` to "
        + ("serve it" if paper else "connect it"),
    )


@venues.command("list")
@_store_options
@click.option("--account", "account", default=None, help="Account id or name (default: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def venues_list(ctx: click.Context, account: str | None, as_json: bool) -> None:
    """List venues (never their credentials); `simulated` says paper (the paper market) or sandbox."""

    async def work(rt: Runtime) -> list[VenueRecord]:
        account_id = (await _account(rt, account)).id if account else None
        return await rt.store.list_venues(account_id)

    found = _run(ctx, work, reads=True)
    _emit(
        ctx,
        as_json,
        [_venue_json(v) for v in found],
        render(
            ["account", "exchange", "simulated", "sandbox", "url", "added"],
            [
                [
                    v.account_id,
                    v.exchange,
                    _simulated_cell(v),
                    "yes" if v.options.get("sandbox") else "no",
                    v.options.get("url") or "-",
                    _when(v.created_at),
                ]
                for v in found
            ],
        ),
        empty="venues",
    )


@venues.command("remove")
@_store_options
@click.option("--account", "account", default="default", show_default=True, help="Account id or name.")
@click.option("--exchange", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def venues_remove(ctx: click.Context, account: str, exchange: str, as_json: bool) -> None:
    """Remove a venue and its credentials; a running server keeps it until it restarts."""

    async def work(rt: Runtime) -> str:
        found = await _account(rt, account)
        if not await rt.store.delete_venue(found.id, exchange):
            raise CliError("NOT_FOUND", f"account {found.name!r} has no venue {exchange!r} (see `rt venues list`)")
        await rt.audit.write("venue.removed", account_id=found.id, actor="cli", exchange=exchange)
        return found.id

    account_id = _run(ctx, work)
    _emit(
        ctx,
        as_json,
        {"account_id": account_id, "exchange": exchange, "removed": True},
        f"removed venue {exchange} from account {account_id}",
    )


# webhooks


@main.group()
def webhooks() -> None:
    """Webhook endpoints, their secrets and the delivery log. A running `rt serve` sends the deliveries."""


async def _accounts(rt: Runtime, account: str | None) -> list[Account]:
    return [await _account(rt, account)] if account else await rt.store.list_accounts()


async def _endpoint(rt: Runtime, webhook_id: str, account: str | None) -> WebhookEndpoint:
    for found in await _accounts(rt, account):
        endpoint = await rt.store.get_endpoint(found.id, webhook_id)
        if endpoint is not None:
            return endpoint
    raise CliError("NOT_FOUND", f"no webhook endpoint {webhook_id!r} in {where(rt.settings)} (see `rt webhooks list`)")


def _endpoint_row(e: WebhookEndpoint) -> list[Any]:
    return [
        e.id,
        e.account_id,
        e.url,
        ",".join(e.events),
        e.status if e.disabled_reason is None else f"{e.status} ({e.disabled_reason})",
        _when(e.failing_since),
        _when(e.created_at),
    ]


def _delivery_row(d: WebhookDelivery) -> list[Any]:
    return [
        d.id,
        d.event,
        d.endpoint_id,
        d.status,
        d.attempts,
        d.last_status_code if d.last_status_code is not None else "-",
        _when(d.next_attempt_at),
        _when(d.created_at),
    ]


def _with_secret(endpoint: WebhookEndpoint, secret: str, as_json: bool) -> None:
    from rt.webhooks.manage import endpoint_json

    shown = {**endpoint_json(endpoint), "secret": secret}
    if as_json:
        click.echo(wire.dumps(shown).decode())
        return
    click.echo(f"webhook id:  {endpoint.id}")
    click.echo(f"account:     {endpoint.account_id}")
    click.echo(f"url:         {endpoint.url}")
    click.echo(f"events:      {','.join(endpoint.events)}")
    click.echo(f"secret:      {secret}")
    if shown["previous_secret_expires_at"]:
        click.echo(f"previous:    signs too until {shown['previous_secret_expires_at']}")
    click.echo("Store the secret now: it is not shown again.", err=True)


def _due(deliveries: list[WebhookDelivery], as_json: bool, what: str) -> None:
    from rt.webhooks.manage import delivery_json

    if as_json:
        click.echo(wire.dumps([delivery_json(d) for d in deliveries]).decode())
        return
    click.echo(f"{what}: {', '.join(d.id for d in deliveries)}")
    click.echo("A running `rt serve` sends it now (its worker watches the outbox); see `rt webhooks log`.")


@webhooks.command("list")
@_store_options
@click.option("--account", "account", default=None, help="Account id or name (default: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_list(ctx: click.Context, account: str | None, as_json: bool) -> None:
    """List webhook endpoints (never their secrets)."""
    from rt.webhooks.manage import endpoint_json

    async def work(rt: Runtime) -> list[WebhookEndpoint]:
        found: list[WebhookEndpoint] = []
        for owner in await _accounts(rt, account):
            while True:
                page, total = await rt.webhooks.list(owner.id, 500, len(found))
                found.extend(page)
                if not page or len(found) >= total:
                    break
        return found

    endpoints = _run(ctx, work, reads=True)
    _emit(
        ctx,
        as_json,
        [endpoint_json(e) for e in endpoints],
        render(
            ["id", "account", "url", "events", "status", "failing since", "created"],
            [_endpoint_row(e) for e in endpoints],
        ),
        empty="webhook endpoints",
    )


@webhooks.command("create")
@_store_options
@click.argument("url")
@click.option("--events", default="*", show_default=True, help="Event names, comma-separated, or * for every one.")
@click.option("--description", default="", help="A label for the endpoint.")
@click.option("--account", "account", default="default", show_default=True, help="Account id or name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def webhooks_create(ctx: click.Context, url: str, events: str, description: str, account: str, as_json: bool) -> None:
    """Create an endpoint; its signing secret is printed once."""
    names = [name.strip() for name in events.split(",") if name.strip()]

    async def work(rt: Runtime) -> tuple[WebhookEndpoint, str]:
        found = await _account(rt, account)
        return await rt.webhooks.create(found.id, url, names, description)

    _with_secret(*_run(ctx, work), as_json)


@webhooks.command("update")
@_store_options
@click.argument("webhook_id")
@click.option("--url", default=None, help="A new destination (checked as at creation).")
@click.option("--events", default=None, help="Event names, comma-separated, or * for every one (replaces the list).")
@click.option("--description", default=None, help="A new label.")
@click.option("--enable/--disable", "enable", default=None, help="Turn the endpoint back on, or off.")
@click.option("--account", "account", default=None, help="Account id or name (default: whichever holds it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_update(
    ctx: click.Context,
    webhook_id: str,
    url: str | None,
    events: str | None,
    description: str | None,
    enable: bool | None,
    account: str | None,
    as_json: bool,
) -> None:
    """Change an endpoint's url, events or description, or enable (clearing why it was disabled) or disable it.
    Deliveries that failed while it was disabled stay failed: redeliver them."""
    from rt.webhooks.manage import endpoint_json

    names = None if events is None else [name.strip() for name in events.split(",") if name.strip()]
    status: EndpointStatus | None = None if enable is None else "enabled" if enable else "disabled"

    async def work(rt: Runtime) -> WebhookEndpoint:
        endpoint = await _endpoint(rt, webhook_id, account)
        return await rt.webhooks.update(
            endpoint.account_id, endpoint.id, url=url, events=names, description=description, status=status
        )

    endpoint = _run(ctx, work)
    table = render(["id", "account", "url", "events", "status", "failing since", "created"], [_endpoint_row(endpoint)])
    _emit(ctx, as_json, endpoint_json(endpoint), table)


@webhooks.command("delete")
@_store_options
@click.argument("webhook_id")
@click.option("--account", "account", default=None, help="Account id or name (default: whichever holds it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_delete(ctx: click.Context, webhook_id: str, account: str | None, as_json: bool) -> None:
    """Delete an endpoint with its deliveries."""

    async def work(rt: Runtime) -> WebhookEndpoint:
        endpoint = await _endpoint(rt, webhook_id, account)
        await rt.webhooks.delete(endpoint.account_id, endpoint.id)
        return endpoint

    endpoint = _run(ctx, work)
    done = f"deleted webhook endpoint {endpoint.id} ({endpoint.url})"
    _emit(ctx, as_json, {"id": endpoint.id, "deleted": True}, done)


@webhooks.command("rotate")
@_store_options
@click.argument("webhook_id")
@click.option("--account", "account", default=None, help="Account id or name (default: whichever holds it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_rotate(ctx: click.Context, webhook_id: str, account: str | None, as_json: bool) -> None:
    """Give an endpoint a new secret, printed once; the previous one keeps signing for 7 days."""

    async def work(rt: Runtime) -> tuple[WebhookEndpoint, str]:
        endpoint = await _endpoint(rt, webhook_id, account)
        return await rt.webhooks.rotate(endpoint.account_id, endpoint.id)

    _with_secret(*_run(ctx, work), as_json)


@webhooks.command("log")
@_store_options
@click.argument("delivery_id", required=False)
@click.option("--account", "account", default=None, help="Account id or name (default: all).")
@click.option("--endpoint", "endpoint_id", default=None, help="Only deliveries to this endpoint (whk_…).")
@click.option("--event", default=None, help="Only deliveries of this event name.")
@click.option("--event-id", default=None, help="Only deliveries of this event (evt_…).")
@click.option("--status", type=click.Choice(["pending", "succeeded", "failed"]), default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_log(
    ctx: click.Context,
    delivery_id: str | None,
    account: str | None,
    endpoint_id: str | None,
    event: str | None,
    event_id: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The delivery log, newest first; with a DELIVERY_ID, that delivery with every attempt."""
    from rt.webhooks.manage import delivery_json

    async def one(rt: Runtime) -> WebhookDelivery:
        assert delivery_id is not None
        for owner in await _accounts(rt, account):
            found = await rt.store.get_delivery(owner.id, delivery_id)
            if found is not None:
                return found
        raise CliError("NOT_FOUND", f"no webhook delivery {delivery_id!r} in {where(rt.settings)}")

    async def newest(rt: Runtime) -> list[WebhookDelivery]:
        found: list[WebhookDelivery] = []
        if endpoint_id is not None:
            owners = [(await _endpoint(rt, endpoint_id, account)).account_id]
        else:
            owners = [owner.id for owner in await _accounts(rt, account)]
        for owner_id in owners:
            page, _ = await rt.webhooks.deliveries(owner_id, endpoint_id, event, status, event_id, limit, 0)
            found.extend(page)
        found.sort(key=lambda d: d.created_at, reverse=True)
        return found[:limit]

    if delivery_id is None:
        deliveries = _run(ctx, newest, reads=True)
        _emit(
            ctx,
            as_json,
            [delivery_json(d) for d in deliveries],
            render(
                ["id", "event", "endpoint", "status", "attempts", "last code", "next attempt", "created"],
                [_delivery_row(d) for d in deliveries],
            ),
            empty="webhook deliveries",
        )
        return
    delivery = _run(ctx, one, reads=True)
    attempts = render(
        ["at", "code", "latency ms", "error", "response"],
        [
            [
                _when(a.at),
                a.status_code if a.status_code is not None else "-",
                f"{a.latency_ms:.0f}",
                a.error or "-",
                " ".join(a.response.split())[:60] or "-",
            ]
            for a in delivery.log
        ],
    )
    summary = render(
        ["id", "event", "endpoint", "status", "attempts", "last code", "next attempt", "created"],
        [_delivery_row(delivery)],
    )
    _emit(ctx, as_json, delivery_json(delivery), f"{summary}\n\nevent: {delivery.event_id}\n\n{attempts}")


@webhooks.command("test")
@_store_options
@click.argument("webhook_id")
@click.option("--account", "account", default=None, help="Account id or name (default: whichever holds it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_test(ctx: click.Context, webhook_id: str, account: str | None, as_json: bool) -> None:
    """Queue a webhook.test event for an endpoint."""

    async def work(rt: Runtime) -> WebhookDelivery:
        endpoint = await _endpoint(rt, webhook_id, account)
        return await rt.webhooks.test(endpoint.account_id, endpoint.id)

    _due([_run(ctx, work)], as_json, "queued a webhook.test delivery")


@webhooks.command("redeliver")
@_store_options
@click.argument("delivery_or_event_id")
@click.option("--account", "account", default=None, help="Account id or name (default: whichever holds it).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def webhooks_redeliver(ctx: click.Context, delivery_or_event_id: str, account: str | None, as_json: bool) -> None:
    """Make a delivery (whd_…), or every delivery of an event (evt_…), due again at once."""

    async def work(rt: Runtime) -> list[WebhookDelivery]:
        for owner in await _accounts(rt, account):
            try:
                found = await rt.webhooks.redeliver(owner.id, delivery_or_event_id)
            except NotFound:
                continue
            if found:
                return found
        raise CliError("NOT_FOUND", f"no webhook delivery or event {delivery_or_event_id!r} in {where(rt.settings)}")

    _due(_run(ctx, work), as_json, "made due again")


@main.command()
@_store_options
@click.option("--account", "account", default=None, help="Account id or name (default: all).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit(ctx: click.Context, account: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log: auth failures and key changes, newest first."""

    async def work(rt: Runtime) -> list[Any]:
        account_id = (await _account(rt, account)).id if account else None
        return await rt.store.list_audit(account_id, limit)

    entries = _run(ctx, work, reads=True)
    payload = [
        {
            "id": e.id,
            "at": e.at,
            "action": e.action,
            "account_id": e.account_id,
            "key_id": e.key_id,
            "ip": e.ip,
            "detail": e.detail,
        }
        for e in entries
    ]
    _emit(
        ctx,
        as_json,
        payload,
        render(
            ["at", "action", "account", "key", "ip", "detail"],
            [
                [
                    _when(e.at),
                    e.action,
                    e.account_id or "-",
                    e.key_id or "-",
                    e.ip or "-",
                    " ".join(f"{k}={v}" for k, v in e.detail.items() if v is not None),
                ]
                for e in entries
            ],
        ),
        empty="audit entries",
    )


@main.command()
@click.argument("channels", nargs=-1, required=True)
@click.option("--url", envvar="RT_URL", default="http://127.0.0.1:8080", show_default=True, help="Server URL (RT_URL).")
@click.option("--key", envvar="RT_KEY", required=True, help="API key with ws:connect (RT_KEY).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=0), default=0, help="Stop after this many events (0: run on).")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Failed connection attempts in a row before giving up (0: never give up).",
)
def watch(channels: tuple[str, ...], url: str, key: str, as_json: bool, count: int, max_attempts: int) -> None:
    """Stream channels to the terminal: positions, orders, strategies, risk, account, events, ticks:BTC/USDT ...

    Progress and connection failures go to stderr; messages to stdout.
    """
    from rt._watch import check_channels, check_url
    from rt._watch import watch as run

    def say(text: str) -> None:
        click.echo(text, err=True)

    try:
        check_channels(channels)
        check_url(url)
        asyncio.run(
            run(url.rstrip("/"), key, channels, as_json=as_json, count=count, max_attempts=max_attempts, say=say)
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
