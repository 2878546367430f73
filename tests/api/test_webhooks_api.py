"""rt/api/webhooks: the /v1/webhooks routes over the real app: scopes, one account never sees another's endpoints or
deliveries, destinations refused with the rule named, the secret shown once, and the delivery log of a real trade."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from standardwebhooks import Webhook

from rt.app import create_app
from rt.config import Settings

PUBLIC = "https://1.1.1.1/rt-hook"  # a literal public address: no DNS, and no event is ever sent to it here


@dataclass
class Desk:
    """Clients of two accounts (both with a `full` key) and one read-only client of the first."""

    http: httpx.AsyncClient
    other: httpx.AsyncClient
    reader: httpx.AsyncClient


@contextlib.asynccontextmanager
async def desk(data_dir: Path, **settings: Any) -> AsyncIterator[Desk]:
    app = create_app(Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, **settings))
    async with app.router.lifespan_context(app):
        keys = app.state.runtime.keys
        first = await keys.create_account("desk")
        second = await keys.create_account("elsewhere")
        admin = await keys.create(first.id, "full", "pro_plus")
        reader = await keys.create(first.id, "read-only", "pro_plus")
        stranger = await keys.create(second.id, "full", "pro_plus")
        transport = httpx.ASGITransport(app=app)

        def client(key: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=transport, base_url="http://rt.test", headers={"X-API-Key": key})

        async with client(admin.key) as a, client(stranger.key) as b, client(reader.key) as r:
            yield Desk(a, b, r)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 that answers 200 to every POST and keeps what it got."""

    port: int = 0
    got: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.got.append(Received(headers, body))
                self.arrived.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    server = await asyncio.start_server(made.handle, "127.0.0.1", 0)
    made.port = server.sockets[0].getsockname()[1]
    async with server:
        yield made


async def eventually(check: Callable[[], Awaitable[Any]], seconds: float = 10.0) -> Any:
    """Poll until `check` returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def create(http: httpx.AsyncClient, url: str = PUBLIC, events: list[str] | None = None) -> dict[str, Any]:
    response = await http.post("/v1/webhooks", json={"url": url, "events": events or ["*"]})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_every_route_needs_webhooks_manage(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http)
        calls = [
            ("GET", "/v1/webhooks", None),
            ("POST", "/v1/webhooks", {"url": PUBLIC, "events": ["*"]}),
            ("GET", f"/v1/webhooks/{made['id']}", None),
            ("PATCH", f"/v1/webhooks/{made['id']}", {"status": "disabled"}),
            ("DELETE", f"/v1/webhooks/{made['id']}", None),
            ("POST", f"/v1/webhooks/{made['id']}/rotate-secret", None),
            ("POST", f"/v1/webhooks/{made['id']}/test", None),
            ("GET", "/v1/webhooks/events", None),
            ("GET", "/v1/webhooks/events/whd_x", None),
            ("POST", "/v1/webhooks/events/whd_x/redeliver", None),
        ]
        for method, path, body in calls:
            response = await d.reader.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["code"] == "INSUFFICIENT_SCOPE"
        assert (await d.http.get(f"/v1/webhooks/{made['id']}")).status_code == 200, "the refused calls changed it"


async def test_the_secret_is_shown_at_create_and_never_again(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http, events=["position.opened", "order.filled"])
        assert made["id"].startswith("whk_") and made["secret"].startswith("whsec_")
        assert made["events"] == ["position.opened", "order.filled"]
        assert made["status"] == "enabled" and made["previous_secret_expires_at"] is None
        one = (await d.http.get(f"/v1/webhooks/{made['id']}")).json()
        listed = (await d.http.get("/v1/webhooks")).json()
        assert listed["total"] == 1 and listed["page"] == 1
        assert one == listed["webhooks"][0] == {k: v for k, v in made.items() if k != "secret"}
        for text in ((await d.http.get(f"/v1/webhooks/{made['id']}")).text, orjson.dumps(listed).decode()):
            assert made["secret"] not in text and "whsec_" not in text


async def test_the_list_pages(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        ids = {(await create(d.http))["id"] for _ in range(3)}
        pages = [(await d.http.get("/v1/webhooks", params={"limit": 2, "page": p})).json() for p in (1, 2)]
        assert [len(p["webhooks"]) for p in pages] == [2, 1] and all(p["total"] == 3 for p in pages)
        assert {w["id"] for p in pages for w in p["webhooks"]} == ids


async def test_rotation_answers_a_new_secret_and_when_the_old_one_stops(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http)
        response = await d.http.post(f"/v1/webhooks/{made['id']}/rotate-secret")
        assert response.status_code == 200, response.text
        rotated = response.json()
        assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]
        assert rotated["previous_secret_expires_at"] is not None
        shown = (await d.http.get(f"/v1/webhooks/{made['id']}")).json()
        assert "secret" not in shown and shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]


def _every_byte_under(root: Path) -> bytes:
    return b"".join(path.read_bytes() for path in root.rglob("*") if path.is_file())


async def test_no_secret_is_kept_in_the_clear_not_even_for_a_replay(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        headers = {"Idempotency-Key": "make-hook-1"}
        first = await d.http.post("/v1/webhooks", json={"url": PUBLIC, "events": ["*"]}, headers=headers)
        again = await d.http.post("/v1/webhooks", json={"url": PUBLIC, "events": ["*"]}, headers=headers)
        assert first.status_code == again.status_code == 201
        assert "idempotent-replayed" not in again.headers and again.json()["id"] != first.json()["id"]
        rotated = await d.http.post(f"/v1/webhooks/{first.json()['id']}/rotate-secret", headers=headers)
        assert rotated.status_code == 200
        secrets = [first.json()["secret"], again.json()["secret"], rotated.json()["secret"]]
    stored = _every_byte_under(tmp_path)
    assert stored and not any(secret.encode() in stored for secret in secrets)


async def test_delete_answers_the_id_and_the_endpoint_is_gone(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http)
        response = await d.http.delete(f"/v1/webhooks/{made['id']}")
        assert response.status_code == 200 and response.json() == {"id": made["id"], "deleted": True}
        assert (await d.http.get(f"/v1/webhooks/{made['id']}")).status_code == 404
        assert (await d.http.delete(f"/v1/webhooks/{made['id']}")).status_code == 404
        assert (await d.http.get("/v1/webhooks")).json()["total"] == 0


async def test_a_url_that_is_not_https_or_not_public_is_refused_naming_the_rule(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        for url, words in (
            ("http://1.1.1.1/hook", "https"),
            ("https://10.1.2.3/hook", "private"),
            ("https://127.0.0.1:9000/hook", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "metadata"),
        ):
            response = await d.http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
            assert response.status_code == 400, (url, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["code"] == "WEBHOOK_URL_NOT_ALLOWED", url
            assert words in problem["detail"], (url, problem["detail"])
        assert (await d.http.get("/v1/webhooks")).json()["total"] == 0


async def test_unknown_event_names_are_a_400_that_names_them(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        response = await d.http.post("/v1/webhooks", json={"url": PUBLIC, "events": ["order.filled", "order.eaten"]})
        assert response.status_code == 400, response.text
        problem = response.json()
        assert problem["code"] == "BAD_REQUEST" and "order.eaten" in problem["detail"]
        assert "order.filled" not in problem["detail"]
        empty = await d.http.post("/v1/webhooks", json={"url": PUBLIC, "events": []})
        assert empty.status_code == 400 and [e["field"] for e in empty.json()["errors"]] == ["events"]


async def test_an_account_has_at_most_20_endpoints(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        for _ in range(20):
            await create(d.http)
        response = await d.http.post("/v1/webhooks", json={"url": PUBLIC, "events": ["*"]})
        assert response.status_code == 409 and response.json()["code"] == "WEBHOOK_LIMIT_REACHED"
        assert (await create(d.other))["id"], "another account has its own 20"


async def test_the_delivery_log_is_a_route_of_its_own_not_an_endpoint_id(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        response = await d.http.get("/v1/webhooks/events")
        assert response.status_code == 200, response.text
        assert response.json() == {"deliveries": [], "total": 0, "page": 1}
        bad = await d.http.get("/v1/webhooks/events", params={"status": "lost"})
        assert bad.status_code == 400 and [e["field"] for e in bad.json()["errors"]] == ["status"]


async def test_a_trade_fills_the_delivery_log_and_the_receiver_gets_it_signed(tmp_path: Path) -> None:
    async with receiver() as hook, desk(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as d:
        made = await create(d.http, url=hook.url, events=["position.opened"])
        opened = await d.http.post("/v1/positions", json={"symbol": "BTC/USDT", "side": "long", "quantity": 0.01})
        assert opened.status_code in (201, 202), opened.text
        position_id = opened.json()["position"]["id"]

        async def succeeded() -> list[dict[str, Any]]:
            log = (await d.http.get("/v1/webhooks/events", params={"status": "succeeded"})).json()
            return list(log["deliveries"])

        [delivery] = await eventually(succeeded)
        assert delivery["event"] == "position.opened" and delivery["endpoint_id"] == made["id"]
        assert delivery["attempts"] == 1 and delivery["last_status_code"] == 200
        assert delivery["next_attempt_at"] is None
        [attempt] = delivery["log"]
        assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["response"] == "ok"
        one = await d.http.get(f"/v1/webhooks/events/{delivery['id']}")
        assert one.status_code == 200 and one.json() == {"delivery": delivery}
        by_event = (await d.http.get("/v1/webhooks/events", params={"event_id": delivery["event_id"]})).json()
        assert [x["id"] for x in by_event["deliveries"]] == [delivery["id"]]

        [got] = hook.got
        sent = Webhook(made["secret"]).verify(got.body, got.headers)
        assert sent["id"] == delivery["event_id"] == got.headers["webhook-id"]
        assert sent["event"] == "position.opened" and sent["data"]["position_id"] == position_id


async def test_test_and_redeliver_send_again_and_other_accounts_get_404(tmp_path: Path) -> None:
    async with receiver() as hook, desk(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as d:
        made = await create(d.http, url=hook.url, events=["position.opened"])
        response = await d.http.post(f"/v1/webhooks/{made['id']}/test")
        assert response.status_code == 202, response.text
        queued = response.json()["delivery"]
        assert queued["event"] == "webhook.test" and queued["endpoint_id"] == made["id"]
        await eventually(lambda: _status(d.http, queued["id"], "succeeded"))
        assert orjson.loads(hook.got[0].body)["data"]["endpoint_id"] == made["id"]

        again = await d.http.post(f"/v1/webhooks/events/{queued['id']}/redeliver")
        assert again.status_code == 202, again.text
        assert [x["id"] for x in again.json()["deliveries"]] == [queued["id"]]
        await eventually(lambda: _attempts(d.http, queued["id"], 2))
        by_event = await d.http.post(f"/v1/webhooks/events/{queued['event_id']}/redeliver")
        assert [x["id"] for x in by_event.json()["deliveries"]] == [queued["id"]]
        await eventually(lambda: _attempts(d.http, queued["id"], 3))
        assert len({r.headers["webhook-id"] for r in hook.got}) == 1 and len(hook.got) == 3

        for method, path in (
            ("GET", f"/v1/webhooks/{made['id']}"),
            ("DELETE", f"/v1/webhooks/{made['id']}"),
            ("POST", f"/v1/webhooks/{made['id']}/rotate-secret"),
            ("POST", f"/v1/webhooks/{made['id']}/test"),
            ("GET", f"/v1/webhooks/events/{queued['id']}"),
            ("POST", f"/v1/webhooks/events/{queued['id']}/redeliver"),
            ("POST", f"/v1/webhooks/events/{queued['event_id']}/redeliver"),
        ):
            refused = await d.other.request(method, path)
            assert refused.status_code == 404, (method, path, refused.text)
            assert refused.json()["code"] == "NOT_FOUND"
        theirs = await d.other.get("/v1/webhooks/events", params={"endpoint_id": made["id"]})
        assert theirs.status_code == 404
        assert (await d.other.get("/v1/webhooks/events")).json()["total"] == 0
        assert (await d.other.get("/v1/webhooks")).json()["total"] == 0
        assert (await d.http.get(f"/v1/webhooks/{made['id']}")).status_code == 200, "another account deleted it"
        assert len(hook.got) == 3, "another account's calls sent nothing"


async def _status(http: httpx.AsyncClient, delivery_id: str, status: str) -> bool:
    return bool((await http.get(f"/v1/webhooks/events/{delivery_id}")).json()["delivery"]["status"] == status)


async def _attempts(http: httpx.AsyncClient, delivery_id: str, attempts: int) -> bool:
    found = (await http.get(f"/v1/webhooks/events/{delivery_id}")).json()["delivery"]
    return bool(found["attempts"] == attempts and found["status"] == "succeeded")


async def _open_position(http: httpx.AsyncClient) -> str:
    opened = await http.post("/v1/positions", json={"symbol": "BTC/USDT", "side": "long", "quantity": 0.01})
    assert opened.status_code in (201, 202), opened.text
    return str(opened.json()["position"]["id"])


async def _log(http: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/v1/webhooks/events", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


async def test_a_disabled_endpoint_patched_back_on_receives_the_next_event(tmp_path: Path) -> None:
    async with receiver() as hook, desk(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as d:
        made = await create(d.http, url=hook.url, events=["position.opened"])
        path = f"/v1/webhooks/{made['id']}"
        off = await d.http.patch(path, json={"status": "disabled"})
        assert off.status_code == 200, off.text
        assert off.json()["status"] == "disabled" and off.json()["disabled_reason"]
        await _open_position(d.http)  # its outbox rows are written with its events: none for a disabled endpoint
        assert await _log(d.http, endpoint_id=made["id"]) == []
        refused = await d.http.post(f"{path}/test")
        assert refused.status_code == 409 and refused.json()["code"] == "WEBHOOK_DISABLED"

        on = await d.http.patch(path, json={"status": "enabled"})
        assert on.status_code == 200, on.text
        shown = on.json()
        assert (shown["status"], shown["disabled_reason"], shown["failing_since"]) == ("enabled", None, None)
        assert "secret" not in shown and made["secret"] not in on.text
        assert (await d.http.get(path)).json() == shown

        position_id = await _open_position(d.http)
        [delivery] = await eventually(lambda: _log(d.http, endpoint_id=made["id"], status="succeeded"))
        assert delivery["event"] == "position.opened"
        [got] = hook.got
        sent = Webhook(made["secret"]).verify(got.body, got.headers)
        assert sent["data"]["position_id"] == position_id


async def test_patch_changes_what_it_names_and_a_private_url_is_a_400(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http, events=["order.filled"])
        path = f"/v1/webhooks/{made['id']}"
        for url, words in (("https://10.1.2.3/hook", "private"), ("http://1.1.1.1/hook", "https")):
            response = await d.http.patch(path, json={"url": url})
            assert response.status_code == 400, (url, response.text)
            assert response.json()["code"] == "WEBHOOK_URL_NOT_ALLOWED" and words in response.json()["detail"]
        for body in ({"events": []}, {"events": ["order.eaten"]}, {"status": "paused"}, {"secret": "whsec_x"}):
            response = await d.http.patch(path, json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["code"] == "BAD_REQUEST"
        unchanged = {k: v for k, v in made.items() if k != "secret"}
        assert (await d.http.get(path)).json() == unchanged

        response = await d.http.patch(path, json={"url": "https://1.0.0.1/v2", "description": "desk"})
        assert response.status_code == 200, response.text
        assert response.json() == {**unchanged, "url": "https://1.0.0.1/v2", "description": "desk"}


async def test_changed_events_apply_from_the_next_event(tmp_path: Path) -> None:
    async with receiver() as hook, desk(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as d:
        made = await create(d.http, url=hook.url, events=["position.closed"])
        await _open_position(d.http)
        assert await _log(d.http) == []
        response = await d.http.patch(f"/v1/webhooks/{made['id']}", json={"events": ["position.opened"]})
        assert response.status_code == 200 and response.json()["events"] == ["position.opened"]
        position_id = await _open_position(d.http)
        [delivery] = await eventually(lambda: _log(d.http, status="succeeded"))
        assert delivery["event"] == "position.opened"
        assert [orjson.loads(r.body)["data"]["position_id"] for r in hook.got] == [position_id]
        assert len(await _log(d.http)) == 1


async def test_patching_another_accounts_endpoint_is_a_404(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        made = await create(d.http)
        path = f"/v1/webhooks/{made['id']}"
        for body in ({"status": "disabled"}, {"url": "https://1.0.0.1/theirs"}, {}):
            response = await d.other.patch(path, json=body)
            assert response.status_code == 404, (body, response.text)
            assert response.json()["code"] == "NOT_FOUND"
        assert (await d.http.get(path)).json() == {k: v for k, v in made.items() if k != "secret"}


async def test_redelivering_to_a_disabled_endpoint_is_a_409_naming_it(tmp_path: Path) -> None:
    async with receiver() as hook, desk(tmp_path, webhook_allow_hosts=("127.0.0.1",)) as d:
        made = await create(d.http, url=hook.url, events=["position.opened"])
        queued = (await d.http.post(f"/v1/webhooks/{made['id']}/test")).json()["delivery"]
        await eventually(lambda: _status(d.http, queued["id"], "succeeded"))
        assert (await d.http.patch(f"/v1/webhooks/{made['id']}", json={"status": "disabled"})).status_code == 200
        for asked in (queued["id"], queued["event_id"]):
            response = await d.http.post(f"/v1/webhooks/events/{asked}/redeliver")
            assert response.status_code == 409, response.text
            problem = response.json()
            assert problem["code"] == "WEBHOOK_DISABLED" and made["id"] in problem["detail"]
        after = (await d.http.get(f"/v1/webhooks/events/{queued['id']}")).json()["delivery"]
        assert (after["status"], after["attempts"]) == ("succeeded", 1)
        assert len(hook.got) == 1
