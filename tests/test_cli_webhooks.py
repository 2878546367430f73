"""rt/cli: `rt webhooks` on the store: the secret printed once, refusals with the API's codes, the delivery log, and a
test delivery the CLI queues that the server then sends."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from standardwebhooks import Webhook

from rt.cli import main
from rt.config import Settings
from rt.runtime import open_runtime
from tests.api.test_webhooks_api import eventually, receiver

PUBLIC = "https://1.1.1.1/rt-hook"  # a literal public address: nothing here sends to it
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


class Cli:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env

    def run(self, *args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(main, ["--data-dir", str(self.data_dir), *args], env=self.env)
        assert (result.exit_code == 0) is ok, (args, result.output, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    made = Cli(tmp_path / "data", RT_WEBHOOK_ALLOW_HOSTS="127.0.0.1")
    made.run("accounts", "create", "desk")
    return made


def test_create_prints_the_secret_once_and_list_never(cli: Cli) -> None:
    created = cli.run("webhooks", "create", PUBLIC, "--account", "desk", "--events", "position.opened, order.filled")
    [secret] = SECRET.findall(created.stdout)
    assert "not shown again" in created.stderr
    [hook_id] = re.findall(r"webhook id:\s+(whk_\w+)", created.stdout)
    table = cli.run("webhooks", "list").stdout
    assert hook_id in table and "position.opened,order.filled" in table and "enabled" in table
    listed = cli.json("webhooks", "list", "--account", "desk")
    assert [w["id"] for w in listed] == [hook_id] and listed[0]["events"] == ["position.opened", "order.filled"]
    assert "whsec_" not in table + json.dumps(listed)

    rotated = cli.json("webhooks", "rotate", hook_id)
    assert rotated["secret"] != secret and rotated["previous_secret_expires_at"]
    text = cli.run("webhooks", "rotate", hook_id).stdout
    assert len(SECRET.findall(text)) == 1 and "previous:" in text


def test_refusals_carry_the_api_codes(cli: Cli) -> None:
    refused = cli.run("webhooks", "create", "http://1.1.1.1/hook", "--account", "desk", "--json", ok=False)
    assert json.loads(refused.stderr)["error"]["code"] == "WEBHOOK_URL_NOT_ALLOWED"
    unknown = cli.run("webhooks", "create", PUBLIC, "--account", "desk", "--events", "order.eaten", ok=False)
    assert "order.eaten" in unknown.stderr
    for args in (("delete", "whk_nope"), ("rotate", "whk_nope"), ("test", "whk_nope"), ("log", "whd_nope")):
        gone = cli.run("webhooks", *args, "--json", ok=False)
        assert json.loads(gone.stderr)["error"]["code"] == "NOT_FOUND", args
    assert cli.json("webhooks", "list") == []


def test_test_queues_a_delivery_the_log_shows_and_redeliver_makes_due(cli: Cli) -> None:
    hook = cli.json("webhooks", "create", "http://127.0.0.1:9/hook", "--account", "desk")
    said = cli.run("webhooks", "test", hook["id"])
    assert "rt serve" in said.stdout
    [queued] = cli.json("webhooks", "log", "--endpoint", hook["id"])
    assert queued["event"] == "webhook.test" and queued["status"] == "pending" and queued["attempts"] == 0
    assert cli.json("webhooks", "log", queued["id"]) == queued
    assert cli.json("webhooks", "log", "--status", "succeeded") == []
    assert queued["id"] in cli.run("webhooks", "log").stdout

    again = cli.json("webhooks", "redeliver", queued["event_id"])
    assert [d["id"] for d in again] == [queued["id"]]
    assert "made due again" in cli.run("webhooks", "redeliver", queued["id"]).stdout

    assert cli.json("webhooks", "delete", hook["id"]) == {"id": hook["id"], "deleted": True}
    assert cli.json("webhooks", "list") == [] and cli.json("webhooks", "log") == []


def test_a_test_the_cli_queued_is_sent_by_the_server(cli: Cli) -> None:
    async def main_() -> None:
        async with receiver() as hook:
            made = await asyncio.to_thread(cli.json, "webhooks", "create", hook.url, "--account", "desk")
            settings = Settings(data_dir=str(cli.data_dir), paper_tick_ms=0, webhook_allow_hosts=("127.0.0.1",))
            await asyncio.to_thread(cli.run, "webhooks", "test", made["id"])
            async with open_runtime(settings, background=True) as runtime:
                desk = await runtime.store.find_account("desk")
                assert desk is not None

                async def sent() -> list[Any]:
                    found, _ = await runtime.webhooks.deliveries(desk.id, status="succeeded")
                    return found

                [done] = await eventually(sent)
            assert done.attempts == 1 and done.last_status_code == 200
            [got] = hook.got
            body = Webhook(made["secret"]).verify(got.body, got.headers)
            assert body["event"] == "webhook.test" and body["data"]["endpoint_id"] == made["id"]
            assert body["id"] == done.event_id == got.headers["webhook-id"]

    asyncio.run(main_())


def test_update_disables_and_re_enables_and_changes_what_it_names(cli: Cli) -> None:
    hook = cli.json("webhooks", "create", "http://127.0.0.1:9/hook", "--account", "desk", "--events", "order.filled")
    cli.run("webhooks", "test", hook["id"])
    [queued] = cli.json("webhooks", "log", "--endpoint", hook["id"])

    off = cli.json("webhooks", "update", hook["id"], "--disable")
    assert off["status"] == "disabled" and off["disabled_reason"]
    assert cli.json("webhooks", "log", queued["id"])["status"] == "failed"
    for args in (("test", hook["id"]), ("redeliver", queued["id"]), ("redeliver", queued["event_id"])):
        refused = cli.run("webhooks", *args, "--json", ok=False)
        error = json.loads(refused.stderr)["error"]
        assert error["code"] == "WEBHOOK_DISABLED" and hook["id"] in error["message"], args
    assert cli.json("webhooks", "log", queued["id"])["status"] == "failed"

    on = cli.json(
        "webhooks", "update", hook["id"], "--enable", "--events", "order.filled,position.opened", "--description", "d"
    )
    assert (on["status"], on["disabled_reason"], on["failing_since"]) == ("enabled", None, None)
    assert (on["events"], on["description"], on["url"]) == (["order.filled", "position.opened"], "d", hook["url"])
    assert cli.json("webhooks", "list") == [on]
    assert cli.json("webhooks", "log", queued["id"])["status"] == "failed", "enabling sends nothing by itself"
    assert "made due again" in cli.run("webhooks", "redeliver", queued["id"]).stdout
    table = cli.run("webhooks", "update", hook["id"], "--url", "http://127.0.0.1:9/v2").stdout
    assert hook["id"] in table and "127.0.0.1:9/v2" in table and "enabled" in table


def test_update_refusals_carry_the_api_codes(cli: Cli) -> None:
    cli.run("accounts", "create", "other")
    hook = cli.json("webhooks", "create", PUBLIC, "--account", "desk")
    private = cli.run("webhooks", "update", hook["id"], "--url", "https://10.0.0.1/hook", "--json", ok=False)
    assert json.loads(private.stderr)["error"]["code"] == "WEBHOOK_URL_NOT_ALLOWED"
    unknown = cli.run("webhooks", "update", hook["id"], "--events", "order.eaten", "--json", ok=False)
    assert json.loads(unknown.stderr)["error"]["code"] == "BAD_REQUEST"
    for args in (("whk_nope", "--disable"), (hook["id"], "--account", "other", "--disable")):
        gone = cli.run("webhooks", "update", *args, "--json", ok=False)
        assert json.loads(gone.stderr)["error"]["code"] == "NOT_FOUND", args
    assert cli.json("webhooks", "list") == [{k: v for k, v in hook.items() if k != "secret"}]
