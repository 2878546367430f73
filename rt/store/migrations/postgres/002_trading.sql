-- The trading core: per-account ledger and state, positions, orders, events, idempotency keys.
-- Money is TEXT holding a decimal exactly as rt wrote it, never a float. Times are epoch milliseconds (events:
-- microseconds). A book's version counts its account's stored writes.
CREATE TABLE books (
    account_id      TEXT PRIMARY KEY REFERENCES accounts(id),
    balance         TEXT NOT NULL,
    currency        TEXT NOT NULL,
    state           TEXT NOT NULL,
    envelope        TEXT NOT NULL,
    day             TEXT NOT NULL DEFAULT '',
    day_realized    TEXT NOT NULL DEFAULT '0',
    realized_total  TEXT NOT NULL DEFAULT '0',
    alerts          TEXT NOT NULL DEFAULT '{}',
    updated_at      BIGINT NOT NULL,
    version         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE positions (
    id              TEXT COLLATE "C" PRIMARY KEY,
    account_id      TEXT NOT NULL,
    exchange        TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    side            TEXT NOT NULL,
    quantity        TEXT NOT NULL,
    entry_price     TEXT NOT NULL,
    status          TEXT NOT NULL,
    current_price   TEXT NOT NULL,
    realized_pnl    TEXT NOT NULL,
    stop_loss       TEXT,
    take_profit     TEXT,
    strategy_id     TEXT,
    close_reason    TEXT,
    entry_order_id  TEXT,
    created_at      BIGINT NOT NULL,
    closed_at       BIGINT
);
CREATE INDEX positions_account ON positions(account_id, status, created_at);

CREATE TABLE orders (
    id               TEXT COLLATE "C" PRIMARY KEY,
    account_id       TEXT NOT NULL,
    exchange         TEXT NOT NULL,
    symbol           TEXT NOT NULL,
    side             TEXT NOT NULL,
    type             TEXT NOT NULL,
    quantity         TEXT NOT NULL,
    status           TEXT NOT NULL,
    intent           TEXT NOT NULL,
    price            TEXT,
    stop_price       TEXT,
    stop_loss        TEXT,
    take_profit      TEXT,
    client_order_id  TEXT,
    position_id      TEXT,
    strategy_id      TEXT,
    venue_order_id   TEXT,
    filled_quantity  TEXT NOT NULL,
    average_price    TEXT,
    fee              TEXT NOT NULL,
    reject_reason    TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX orders_account ON orders(account_id, status, created_at);

-- seq keeps the order events were stored in (SQLite's rowid).
CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    event       TEXT NOT NULL,
    data        TEXT NOT NULL,
    ts_us       BIGINT NOT NULL
);
CREATE INDEX events_account ON events(account_id, seq);

CREATE TABLE idempotency (
    account_id   TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_created ON idempotency(created_at);
