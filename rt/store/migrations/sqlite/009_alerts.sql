-- Inbound alert hooks (the passphrase kept as an HMAC digest under the key pepper) and the log of every alert.
-- Times are epoch milliseconds.
CREATE TABLE alert_hooks (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    name          TEXT NOT NULL DEFAULT '',
    digest        TEXT NOT NULL,
    symbols       TEXT NOT NULL DEFAULT '[]',
    max_quantity  TEXT NOT NULL,
    defaults      TEXT NOT NULL DEFAULT '{}',
    allow_ips     TEXT NOT NULL DEFAULT '',
    test          INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);
CREATE INDEX alert_hooks_account ON alert_hooks(account_id, created_at);

CREATE TABLE alert_log (
    id           TEXT PRIMARY KEY,
    hook_id      TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    ip           TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    body         TEXT NOT NULL DEFAULT '{}',
    order_ids    TEXT NOT NULL DEFAULT '[]',
    code         TEXT,
    detail       TEXT,
    latency_ms   REAL NOT NULL DEFAULT 0
);
CREATE INDEX alert_log_account ON alert_log(account_id, received_at);
CREATE INDEX alert_log_hook ON alert_log(hook_id, received_at);
