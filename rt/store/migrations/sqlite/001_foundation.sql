-- Accounts, API keys, the audit log and per-key usage counters.
-- Times are epoch milliseconds (UTC).
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    parent_id   TEXT REFERENCES accounts(id),
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL DEFAULT '',
    prefix          TEXT NOT NULL,
    digest          TEXT NOT NULL UNIQUE,
    scopes          TEXT NOT NULL,
    tier            TEXT NOT NULL,
    allow_ips       TEXT NOT NULL DEFAULT '',
    test            INTEGER NOT NULL DEFAULT 0,
    signing_secret  TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    last_used_at    INTEGER,
    revoked_at      INTEGER
);
CREATE INDEX api_keys_account ON api_keys(account_id, revoked_at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    account_id  TEXT,
    key_id      TEXT,
    action      TEXT NOT NULL,
    ip          TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_account ON audit_log(account_id, id);

CREATE TABLE key_usage (
    key_id         TEXT NOT NULL,
    hour           INTEGER NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    auth_failures  INTEGER NOT NULL DEFAULT 0,
    rate_limited   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
);
