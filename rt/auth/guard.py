"""The request guard: API key -> Principal, with lockout, allowlist, rate limit and scope checks on the request's
head; then, once the body is read, its signature."""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from rt import errors
from rt.auth import audit, keys
from rt.auth.limiter import Decision, Limiter
from rt.auth.network import Network, contains, parse_networks
from rt.auth.principal import Principal
from rt.auth.tiers import Tier
from rt.auth.usage import UsageMeter
from rt.auth.vault import Box
from rt.config import Settings
from rt.errors import Forbidden, RtError, TooManyRequests, Unauthorized
from rt.records.accounts import ApiKey
from rt.store import Keys

SIGNATURE_TOLERANCE_MS = 5 * 60 * 1000
_CACHE_TTL = 1.0  # a key revoked by another process stops working within this


@dataclass(frozen=True)
class Credentials:
    """What a request's head says: the key is checked before its body is read."""

    key: str | None
    ip: str
    method: str
    signature: str | None


@dataclass
class Verdict:
    principal: Principal
    rate: Decision
    record: ApiKey


def rate_headers(decision: Decision) -> dict[str, str]:
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(int(time.time() + decision.reset_after + 0.999)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, int(decision.retry_after + 0.999)))
    return headers


def sign(secret: str, timestamp_ms: int, body: bytes) -> str:
    """The X-RT-Signature value for a body (what a client computes)."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp_ms},v1={mac}"


def verify_signature(header: str, secret: str, body: bytes, now_ms: int | None = None) -> str | None:
    """None when valid, else the reason it is not."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    stamp = parts.get("t", [""])[0]
    if not stamp.isdigit() or not parts.get("v1"):
        return "malformed signature header; expected t=<unix-ms>,v1=<hex>"
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now_ms - int(stamp)) > SIGNATURE_TOLERANCE_MS:
        return "signature timestamp is more than 5 minutes from the server time (see GET /v1/time)"
    expected = sign(secret, int(stamp), body).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts["v1"]):
        return "signature does not match the body"
    return None


class Guard:
    def __init__(
        self,
        settings: Settings,
        store: Keys,
        limiter: Limiter,
        hasher: keys.KeyHasher,
        box: Box,
        tiers: dict[str, Tier],
        audit_log: audit.AuditLog,
        usage: UsageMeter,
    ) -> None:
        self._settings = settings
        self._store = store
        self._limiter = limiter
        self._hasher = hasher
        self._box = box
        self._tiers = tiers
        self._audit = audit_log
        self._usage = usage
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._networks: dict[tuple[str, ...], tuple[Network, ...]] = {}
        self._principals: dict[str, Principal] = {}

    def forget(self, key_id: str) -> None:
        """Drop a key from the lookup cache (after a revoke in this process)."""
        self._cache = {d: v for d, v in self._cache.items() if v[0].id != key_id}
        self._principals.pop(key_id, None)

    async def _lookup(self, digest: str) -> ApiKey | None:
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        record = await self._store.key_by_digest(digest)
        if record is not None:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (record, now + _CACHE_TTL)
        return record

    async def _fail(
        self, error: RtError, creds: Credentials, record: ApiKey | None, counts: bool, *, checked: bool = False
    ) -> RtError:
        """What a refused request raises. Before the rate limit (`checked` False) the IP's lockout is looked at first:
        a locked-out IP gets IP_LOCKED_OUT whatever else is wrong, and nothing is counted."""
        if not checked:
            locked_for = await self._limiter.locked(creds.ip)
            if locked_for > 0:
                return _locked_out(locked_for)
        self._audit.record(
            audit.AUTH_FAILED,
            account_id=record.account_id if record else None,
            key_id=record.id if record else None,
            ip=creds.ip,
            code=error.code,
            method=creds.method,
        )
        if record is not None:
            self._usage.auth_failure(record.id)
        if counts:
            s = self._settings
            locked_for = await self._limiter.fail(creds.ip, s.lockout_threshold, s.lockout_window, s.lockout_seconds)
            if locked_for > 0:
                return _locked_out(locked_for)
        return error

    async def authenticate(self, creds: Credentials, scope: str) -> Verdict:
        # The lockout is checked first: by the refusal (_fail) before the rate limit, or with the rate limit, in the
        # same round trip, for a key that passed everything before it.
        if not creds.key:
            raise await self._fail(
                Unauthorized("send your API key in X-API-Key or Authorization: Bearer", code=errors.API_KEY_MISSING),
                creds,
                None,
                counts=False,
            )
        if not keys.well_formed(creds.key):
            raise await self._fail(Unauthorized("API key is not valid"), creds, None, counts=True)
        digest = self._hasher.digest(creds.key)
        cached = self._cache.get(digest)
        if cached is None or cached[1] <= time.monotonic():  # a locked-out IP never gets as far as the store
            locked_for = await self._limiter.locked(creds.ip)
            if locked_for > 0:
                raise _locked_out(locked_for)
        record = await self._lookup(digest)
        if record is None or not hmac.compare_digest(digest, record.digest):
            raise await self._fail(Unauthorized("API key is not valid"), creds, None, counts=True)
        if record.revoked_at is not None:
            raise await self._fail(
                Unauthorized("API key has been revoked", code=errors.API_KEY_REVOKED), creds, record, counts=True
            )
        if record.allow_ips:
            networks = self._networks.get(record.allow_ips)
            if networks is None:
                networks = self._networks[record.allow_ips] = parse_networks(record.allow_ips)
            if not contains(networks, creds.ip):
                raise await self._fail(
                    Forbidden(f"requests from {creds.ip} are not allowed for this key", code=errors.IP_NOT_ALLOWED),
                    creds,
                    record,
                    counts=False,
                )
        tier = self._tiers[record.tier]
        decision = await self._limiter.hit(record.id, tier.per_minute, tier.burst, ip=creds.ip)
        if decision.locked_for > 0:
            raise _locked_out(decision.locked_for)
        self._usage.request(record.id)
        if not decision.allowed:
            self._usage.rate_limited(record.id)
            raise TooManyRequests(
                f"rate limit of {tier.per_minute}/min (burst {tier.burst}) for tier {tier.name} exceeded; "
                f"retry in {decision.retry_after:.1f}s",
                headers=rate_headers(decision),
            )
        if scope not in record.scopes:
            raise await self._fail(
                Forbidden(
                    f"this key lacks the {scope} scope",
                    code=errors.INSUFFICIENT_SCOPE,
                    required_scope=scope,
                    headers=rate_headers(decision),
                ),
                creds,
                record,
                counts=False,
                checked=True,
            )
        # A key's account, scopes, tier and allowlist never change (rotating makes a new key), so its Principal
        # is built once.
        principal = self._principals.get(record.id)
        if principal is None:
            if len(self._principals) > 10_000:
                self._principals.clear()
            principal = self._principals[record.id] = Principal(
                account_id=record.account_id,
                key_id=record.id,
                scopes=frozenset(record.scopes),
                tier=record.tier,
                test=record.test,
                allow_ips=record.allow_ips,
            )
        return Verdict(principal, decision, record)

    async def verify_body(self, verdict: Verdict, creds: Credentials, body: bytes) -> None:
        """The X-RT-Signature of a body, once it is read (after the key, its allowlist, rate limit and scope)."""
        if creds.signature is None:
            return
        reason = verify_signature(creds.signature, self._box.open(verdict.record.sealed_signing_secret), body)
        if reason is not None:
            error = Unauthorized(reason, code=errors.REQUEST_SIGNATURE_INVALID, headers=rate_headers(verdict.rate))
            raise await self._fail(error, creds, verdict.record, counts=True, checked=True)


def _locked_out(seconds: float) -> RtError:
    wait = max(1, int(seconds + 0.999))
    return TooManyRequests(
        f"too many failed authentication attempts from this address; try again in {wait}s",
        code=errors.IP_LOCKED_OUT,
        headers={"Retry-After": str(wait)},
    )
