"""End to end: the sample code printed in the seed documents (tests/e2e/seeds/), run as printed against one real
`rt serve`. Only the base URL and the placeholder key (and Alpha Draconis' placeholder account id) are replaced; the
Kerosyne samples define functions and no output, so their tests append the calls and a print. Kraken prints no
sample: its test uses ccxt's `kraken` client for the token and the `websockets` library for the socket."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import ccxt
import orjson
import pytest
import websockets

from tests.conftest import REQUIRE_SERVICES
from tests.e2e.checks import LeakCheck
from tests.e2e.server import Server, cli, run_server

pytestmark = pytest.mark.e2e

SEEDS = Path(__file__).parent / "seeds"
ROOT = Path(__file__).parents[2]
ENV = {
    "RT_PAPER_VENUES": "binance",
    "RT_PAPER_TICK_MS": "0",
    "RT_LOCKOUT_THRESHOLD": "100000",
}
KEROSYNE_BODY = {
    "exchange": "binance",
    "symbol": "BTC/USDT",
    "side": "long",
    "entry_price": 45000.00,
    "quantity": 0.5,
    "stop_loss": 44000.00,
    "take_profit": 48000.00,
}
CREATED_STATUSES = {"pending_validation", "pending", "open"}
KASH_PLACEHOLDER = "kash_live_" + "x" * 32


@dataclass(frozen=True)
class Account:
    id: str
    key_id: str
    key: str


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def json_documents(text: str) -> list[Any]:
    """The JSON bodies a script printed one after the other (curl adds no newline between them)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    text = text.strip()
    while position < len(text):
        document, position = decoder.raw_decode(text, position)
        found.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("seeds") / "data", ENV) as running:
        leaks.watch(running)
        yield running


def new_account(server: Server, leaks: LeakCheck, scopes: str = "full") -> Account:
    """An account of its own with one key, made with the CLI while the server runs, so each sample starts clean."""
    name = "seed-" + secrets.token_hex(4)
    made = cli(server.data_dir, "accounts", "create", name, "--json")
    assert made.returncode == 0, made.stderr
    account_id = json.loads(made.stdout)["id"]
    issued = cli(
        server.data_dir, "keys", "create", "--account", account_id, "--scopes", scopes, "--tier", "pro_plus", "--json"
    )
    assert issued.returncode == 0, issued.stderr
    body = json.loads(issued.stdout)
    leaks.secrets.add(body["key"])
    if body.get("signing_secret"):
        leaks.secrets.add(body["signing_secret"])
    with server.client(body["key"]) as client:
        # The running server learns of a key made by the CLI within a second.
        eventually(lambda: client.get("/v1/account").status_code != 401)
    return Account(account_id, body["id"], body["key"])


@pytest.fixture
def account(server: Server, leaks: LeakCheck) -> Account:
    return new_account(server, leaks)


def sample(name: str, replacements: dict[str, str], tail: str = "") -> str:
    """The sample's text with each placeholder replaced; every placeholder must be in it, so an edit of the sample
    that drops one fails here instead of silently talking to the original host."""
    text = (SEEDS / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"{name} no longer holds {old!r}"
        text = text.replace(old, new)
    for host in ("kerosyne.trade", "alphadraconis.io", "kash.bot", "127.0.0.1:8080"):
        assert host not in text, f"{name} still points at {host}"
    return text + tail


def run(argv: list[str], script: Path, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **(env or {})}
    done = subprocess.run(
        [*argv, str(script)], capture_output=True, text=True, env=full_env, timeout=120, check=False, cwd=script.parent
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def open_position(server: Server, account: Account, exchange: str) -> dict[str, Any]:
    body = {"exchange": exchange, "symbol": "BTC/USDT", "side": "long", "quantity": 0.01}
    with server.client(account.key) as client:
        response = client.post("/v1/positions", json=body)
    assert response.status_code == 201, response.text
    position: dict[str, Any] = response.json()["position"]
    assert position["status"] == "open"
    return position


def fetch_position(server: Server, account: Account, position_id: str) -> dict[str, Any]:
    with server.client(account.key) as client:
        response = client.get(f"/v1/positions/{position_id}")
    assert response.status_code == 200, response.text
    position: dict[str, Any] = response.json()
    return position.get("position", position)


def assert_listed(positions: list[dict[str, Any]], opened: dict[str, Any]) -> None:
    """The positions list as the Kerosyne document shows it, holding the position opened before the sample ran."""
    assert [p["id"] for p in positions] == [opened["id"]]
    listed = positions[0]
    assert listed["exchange"] == "binance"
    assert listed["symbol"] == "BTC/USDT"
    assert listed["side"] == "long"
    assert listed["status"] == "open"
    assert listed["quantity"] == 0.01
    for field in ("entry_price", "current_price", "unrealized_pnl", "stop_loss", "take_profit", "created_at"):
        assert field in listed, field


def assert_created(server: Server, account: Account, created: dict[str, Any], body: dict[str, Any]) -> None:
    """A created position as the Kerosyne document shows it: an id, a status, Cerberus' validation, and it exists."""
    assert created["id"].startswith("pos_")
    assert created["status"] in CREATED_STATUSES
    validation = created["validation"]
    assert isinstance(validation["cerberus_status"], str) and validation["cerberus_status"]
    assert "position_size" in validation["checks"]
    stored = fetch_position(server, account, created["id"])
    assert stored["exchange"] == "binance"
    assert stored["symbol"] == "BTC/USDT"
    assert stored["side"] == "long"
    assert stored["quantity"] == body["quantity"]
    assert stored["entry_price"] == body["entry_price"]
    assert stored["status"] in CREATED_STATUSES


# Kerosyne (seed 000)


def kerosyne_replacements(server: Server, key: str) -> dict[str, str]:
    return {"https://api.kerosyne.trade/v1": server.url + "/v1", "your_api_key": key}


def test_kerosyne_curl_lines_list_and_create_positions(server: Server, account: Account, tmp_path: Path) -> None:
    opened = open_position(server, account, "binance")
    script = write(tmp_path, "kerosyne_curl.sh", sample("kerosyne_curl.sh", kerosyne_replacements(server, account.key)))

    listed, created = json_documents(run(["bash"], script))

    assert_listed(listed["positions"], opened)
    assert listed["total"] == 1 and listed["page"] == 1
    body = {"exchange": "binance", "symbol": "BTC/USDT", "side": "long", "entry_price": 45000, "quantity": 0.5}
    assert_created(server, account, created["position"], body)


KEROSYNE_PY_USAGE = f"""

import json
print(json.dumps(positions))
print(json.dumps(client.create_position({KEROSYNE_BODY!r})))
"""


def test_kerosyne_python_client_lists_and_creates_positions(server: Server, account: Account, tmp_path: Path) -> None:
    opened = open_position(server, account, "binance")
    replacements = {"https://api.kerosyne.trade/v1": server.url + "/v1"}
    script = write(tmp_path, "kerosyne_client.py", sample("kerosyne_client.py", replacements, KEROSYNE_PY_USAGE))

    listed, created = json_documents(run([sys.executable], script, {"KEROSYNE_API_KEY": account.key}))

    assert_listed(listed, opened)
    assert_created(server, account, created, KEROSYNE_BODY)


KEROSYNE_PY_REJECTED = """

import json
response = requests.post(f"{client.base_url}/positions", headers=client.headers, json={
    "exchange": "binance", "symbol": "BTC/USDT", "side": "long", "entry_price": 45000.00, "quantity": 1
})
print(response.status_code)
print(response.json()["error"]["message"])
print(json.dumps(response.json()["error"]))
"""


def test_kerosyne_python_client_reads_the_error_message_of_a_cerberus_reject(
    server: Server, account: Account, tmp_path: Path
) -> None:
    replacements = {"https://api.kerosyne.trade/v1": server.url + "/v1"}
    script = write(tmp_path, "kerosyne_client.py", sample("kerosyne_client.py", replacements, KEROSYNE_PY_REJECTED))

    status, message, error = run([sys.executable], script, {"KEROSYNE_API_KEY": account.key}).splitlines()

    assert status == "422"
    assert message.strip()
    problem = json.loads(error)
    assert problem["code"] == 422
    assert problem["message"] == message
    details = problem["details"]
    assert "max position size" in details["reason"].lower()
    assert details["limit"] == 25000
    assert details["requested"] == 45000
    with server.client(account.key) as client:
        assert client.get("/v1/positions").json()["total"] == 0


KEROSYNE_JS_USAGE = f"""

(async () => {{
  const positions = await getPositions();
  const position = await createPosition({json.dumps(KEROSYNE_BODY)});
  console.log(JSON.stringify({{ positions, position }}));
}})().catch((err) => {{
  console.error(err.response ? JSON.stringify(err.response.data) : err);
  process.exit(1);
}});
"""


def unavailable(reason: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(reason + "; RT_REQUIRE_SERVICES=1 requires it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def axios_modules() -> Path:
    """node_modules holding axios 1.x, installed once with npm into a cache outside git."""
    if shutil.which("node") is None:
        unavailable("node is not installed, so the axios sample cannot run")
    npm = shutil.which("npm")
    if npm is None:
        unavailable("npm is not installed, so axios cannot be installed for the axios sample")
    cache = (
        Path(os.environ["XDG_CACHE_HOME"]) / "rt-tests" if os.environ.get("XDG_CACHE_HOME") else ROOT / "tests/.cache"
    )
    prefix = cache / "axios"
    modules = prefix / "node_modules"
    if not (modules / "axios" / "package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                [
                    str(npm),
                    "install",
                    "--prefix",
                    str(prefix),
                    "--no-audit",
                    "--no-fund",
                    "--no-package-lock",
                    "axios@1",
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            unavailable("npm install axios@1 did not finish within 300 s (is the npm registry reachable?)")
        if done.returncode != 0 or not (modules / "axios" / "package.json").exists():
            unavailable(f"npm install axios@1 failed (is the npm registry reachable?): {done.stderr.strip()[-500:]}")
    return modules


def test_kerosyne_axios_client_lists_and_creates_positions(
    server: Server, account: Account, tmp_path: Path, axios_modules: Path
) -> None:
    opened = open_position(server, account, "binance")
    replacements = {"https://api.kerosyne.trade/v1": server.url + "/v1"}
    script = write(tmp_path, "kerosyne_client.js", sample("kerosyne_client.js", replacements, KEROSYNE_JS_USAGE))

    env = {"KEROSYNE_API_KEY": account.key, "NODE_PATH": str(axios_modules)}
    (printed,) = json_documents(run(["node"], script, env))

    assert_listed(printed["positions"], opened)
    assert_created(server, account, printed["position"], KEROSYNE_BODY)


# Tradyn (seed 001)

BALANCE = re.compile(r"^Balance: (\d+(?:\.\d+)?)$", re.M)
EQUITY = re.compile(r"^Equity: (\d+(?:\.\d+)?)$", re.M)
POSITION_LINE = re.compile(r"^ EURUSD \S+ 0\.1 lots P&L: -?\d+(?:\.\d+)?(?:[eE]-?\d+)?$", re.M)
FILLED = re.compile(r"^Filled ticket #(\S+) @ (\d+\.\d+)$", re.M)


def test_tradyn_quick_start_prints_account_positions_and_a_fill(
    server: Server, account: Account, tmp_path: Path
) -> None:
    replacements = {"http://127.0.0.1:8080/v1": server.url + "/v1", "tk_live_a1b2c3d4e5f6": account.key}
    script = write(tmp_path, "tradyn_quickstart.py", sample("tradyn_quickstart.py", replacements))

    first = run([sys.executable], script)
    # Run again: the buy the first run placed is now an open position, and the loop prints it.
    second = run([sys.executable], script)

    for printed in (first, second):
        balance, equity = BALANCE.search(printed), EQUITY.search(printed)
        assert balance and equity, printed
        assert float(balance.group(1)) > 0 and float(equity.group(1)) > 0
    assert not POSITION_LINE.search(first), first
    assert POSITION_LINE.search(second), second
    tickets = []
    for printed in (first, second):
        filled = FILLED.search(printed)
        assert filled, printed
        assert 1.08 < float(filled.group(2)) < 1.095
        tickets.append(filled.group(1))
    assert tickets[0] != tickets[1]


# Alpha Draconis (seed 002)


def test_draconis_kill_curl_closes_all_positions(server: Server, account: Account, tmp_path: Path) -> None:
    opened = open_position(server, account, "paper")
    replacements = {
        "https://alphadraconis.io": server.url,
        "ad_b2b_your_key_here": account.key,
        '"uuid"': json.dumps(account.id),
    }
    script = write(tmp_path, "draconis_kill.sh", sample("draconis_kill.sh", replacements))

    (reply,) = json_documents(run(["bash"], script))

    assert reply["success"] is True, reply
    assert reply["command_id"].startswith("cmd_")
    assert reply["action"] == "CLOSE_ALL"
    assert reply["account_id"] == account.id
    assert isinstance(reply["latency_ms"], int | float) and reply["latency_ms"] >= 0
    assert isinstance(reply["estimated_execution"], str)
    eventually(lambda: fetch_position(server, account, opened["id"])["status"] == "closed")


# Kash (seed 004)


def test_kash_curl_lines_print_markets_and_usage(server: Server, account: Account, tmp_path: Path) -> None:
    replacements = {"https://api.kash.bot": server.url, KASH_PLACEHOLDER: account.key}
    script = write(tmp_path, "kash_curl.sh", sample("kash_curl.sh", replacements))

    markets, usage = json_documents(run(["bash"], script, {"KASH_API_KEY": account.key}))

    symbols = {market["symbol"] for market in markets["markets"]}
    assert "BTC/USDT" in symbols
    assert markets["total"] == len(markets["markets"])
    assert usage["key_id"] == account.key_id
    assert usage["requests"] >= 1
    assert usage["auth_failures"] == 0
    assert usage["rate_limited"] == 0


# Kraken (seed 003): ccxt's kraken client for the token, then the token in the first subscribe


def kraken(server: Server, key: str) -> Any:
    # rt does not check API-Sign; ccxt still needs a base64 secret to compute one.
    exchange = ccxt.kraken({"apiKey": key, "secret": base64.b64encode(secrets.token_bytes(64)).decode()})
    assert "private" in exchange.urls["api"]
    exchange.urls["api"]["private"] = server.url
    return exchange


async def frames(ws: websockets.ClientConnection, seconds: float = 10.0) -> list[dict[str, Any]]:
    raw = await asyncio.wait_for(ws.recv(), seconds)
    data = orjson.loads(raw)
    return data if isinstance(data, list) else [data]


async def test_kraken_token_from_ccxt_opens_a_socket_in_its_first_subscribe(server: Server, account: Account) -> None:
    reply = await asyncio.to_thread(kraken(server, account.key).privatePostGetWebSocketsToken)

    assert reply["error"] == []
    assert reply["result"]["expires"] == 900
    token = reply["result"]["token"]
    assert isinstance(token, str) and token
    ws_url = server.url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": "positions", "id": 1, "token": token}).decode())
        seen: list[dict[str, Any]] = []
        while not any(m.get("type") == "snapshot" for m in seen):
            seen += await frames(ws)
            assert not [m for m in seen if m.get("type") == "error"], seen
    subscribed = next(m for m in seen if m.get("type") == "subscribed")
    assert subscribed["channel"] == "positions"
    snapshot = next(m for m in seen if m.get("type") == "snapshot")
    assert snapshot["channel"] == "positions"


def test_kraken_key_without_the_websocket_scope_is_permission_denied(server: Server, leaks: LeakCheck) -> None:
    reader = new_account(server, leaks, scopes="account:read")

    with pytest.raises(ccxt.PermissionDenied, match="EGeneral:Permission denied"):
        kraken(server, reader.key).privatePostGetWebSocketsToken()
