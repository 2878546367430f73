"""/v1/keys: list, create (the key is shown once), revoke and rotate API keys of the caller's account."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Page, Strict
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.auth.manage import IssuedKey
from rt.errors import INSUFFICIENT_SCOPE, Forbidden
from rt.records.accounts import ApiKey

TIERS = Literal["starter", "b2b", "pro", "pro_plus"]

# What scopes.resolve accepts, for the document; resolve itself gives the 400 that names the field.
_NAMES = [*scopes.PRESETS, *scopes.ALL]
_ONE = "(?:" + "|".join(_NAMES) + ")"  # names hold only [a-z:_-], which need no escape
ScopeName = Annotated[str, Field(json_schema_extra={"enum": _NAMES})]
ScopeList = Annotated[str, Field(json_schema_extra={"pattern": rf"^[\s,]*{_ONE}(?:\s*,[\s,]*{_ONE})*[\s,]*$"})]


class KeyCreate(Strict):
    scopes: ScopeList | Annotated[list[ScopeName], Field(min_length=1)] = Field(
        description="A preset (`read-only`, `trade-only`, `full`), a comma-separated string or a list of scopes."
    )
    tier: TIERS
    name: str | None = Field(None, max_length=100)
    allow_ips: str | list[str] | None = Field(None, description="IPv4/IPv6 addresses or CIDRs, comma-separated.")
    test: bool = Field(
        False, description="An `rt_test_` key, which trades only on the simulated market (paper and its aliases)."
    )


class KeyQuery(Page):
    active: bool | None = Field(
        None, description="`true`: only keys that are not revoked (as `rt keys list --active`); `false`: only revoked."
    )


class KeyOut(BaseModel):
    id: str
    account_id: str
    name: str
    prefix: str = Field(description="The key's first 12 characters, to recognise it.")
    scopes: list[str]
    tier: str
    allow_ips: list[str]
    test: bool
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyIssued(KeyOut):
    key: str = Field(description="The API key. Shown only in this response.")
    signing_secret: str = Field(description="Secret for X-RT-Signature. Shown only in this response.")
    replaces: str | None = None


class KeyList(BaseModel):
    keys: list[KeyOut]
    total: int
    page: int


def key_json(record: ApiKey) -> dict[str, Any]:
    return {
        "id": record.id,
        "account_id": record.account_id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": list(record.scopes),
        "tier": record.tier,
        "allow_ips": list(record.allow_ips),
        "test": record.test,
        "created_at": record.created_at,
        "last_used_at": record.last_used_at,
        "revoked_at": record.revoked_at,
    }


def issued_json(issued: IssuedKey, replaces: str | None = None) -> dict[str, Any]:
    body = key_json(issued.record)
    body["key"] = issued.key
    body["signing_secret"] = issued.signing_secret
    if replaces:
        body["replaces"] = replaces
    return body


async def list_keys(call: Call) -> dict[str, Any]:
    page: KeyQuery = call.query
    records = await call.runtime.keys.list(call.caller.account_id)
    if page.active is not None:
        records = [r for r in records if (r.revoked_at is None) == page.active]
    return {"keys": [key_json(r) for r in page.slice(records)], "total": len(records), "page": page.page}


def may_issue(call: Call, wanted: tuple[str, ...], tier: str, test: bool) -> None:
    """A key never hands out more than it holds: no scope, tier or live access above its own."""
    caller = call.caller
    beyond = [s for s in wanted if s not in caller.scopes]
    if beyond:
        raise Forbidden(f"a key cannot grant scopes it lacks: {', '.join(beyond)}", code=INSUFFICIENT_SCOPE)
    tiers = call.runtime.tiers
    if tiers[tier].rank > tiers[caller.tier].rank:
        raise Forbidden(f"a {caller.tier} key cannot issue a {tier} key", code=INSUFFICIENT_SCOPE)
    if caller.test and not test:
        raise Forbidden("a test key can only issue test keys", code=INSUFFICIENT_SCOPE)


async def create_key(call: Call) -> dict[str, Any]:
    body: KeyCreate = call.body
    caller = call.caller
    wanted = scopes.resolve(body.scopes)
    may_issue(call, wanted, body.tier, body.test)
    issued = await call.runtime.keys.create(
        caller.account_id,
        wanted,
        body.tier,
        name=body.name or "",
        allow_ips=body.allow_ips,
        test=body.test,
        actor=caller.key_id,
        ip=call.ip,
    )
    return issued_json(issued)


async def revoke_key(call: Call) -> dict[str, Any]:
    record = await call.runtime.keys.revoke(
        call.param("key_id"), account_id=call.caller.account_id, actor=call.caller.key_id, ip=call.ip
    )
    call.runtime.guard.forget(record.id)
    return key_json(record)


async def rotate_key(call: Call) -> dict[str, Any]:
    old_id = call.param("key_id")
    old = await call.runtime.keys.get(old_id, call.caller.account_id)
    may_issue(call, old.scopes, old.tier, old.test)
    issued = await call.runtime.keys.rotate(
        old_id, account_id=call.caller.account_id, actor=call.caller.key_id, ip=call.ip
    )
    call.runtime.guard.forget(old_id)
    return issued_json(issued, replaces=old_id)


OPERATIONS = [
    Operation(
        "GET",
        "/v1/keys",
        list_keys,
        "List the account's API keys",
        "keys",
        scopes.KEYS_MANAGE,
        query=KeyQuery,
        response=KeyList,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
    ),
    Operation(
        "POST",
        "/v1/keys",
        create_key,
        "Create an API key (shown once)",
        "keys",
        scopes.KEYS_MANAGE,
        body=KeyCreate,
        response=KeyIssued,
        status=201,
        errors=(*_errors.AUTH, "BAD_REQUEST", "KEY_LIMIT_REACHED", "REQUEST_SIGNATURE_INVALID"),
        description="At most 5 active keys per account. A key cannot grant scopes or a tier above its own.",
    ),
    Operation(
        "DELETE",
        "/v1/keys/{key_id}",
        revoke_key,
        "Revoke an API key",
        "keys",
        scopes.KEYS_MANAGE,
        response=KeyOut,
        errors=(*_errors.AUTH, "NOT_FOUND", "REQUEST_SIGNATURE_INVALID"),
    ),
    Operation(
        "POST",
        "/v1/keys/{key_id}/rotate",
        rotate_key,
        "Rotate an API key",
        "keys",
        scopes.KEYS_MANAGE,
        response=KeyIssued,
        status=201,
        errors=(*_errors.AUTH, "NOT_FOUND", "REQUEST_SIGNATURE_INVALID"),
        description="Issues a new key with the same settings and revokes the old one at once.",
    ),
]
