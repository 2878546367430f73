-- Accounts, API keys, the audit log and per-key usage counters.
-- Times are epoch milliseconds (UTC). Text that rt sorts by compares byte by byte (COLLATE "C"), as in SQLite.
CREATE TABLE accounts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    parent_id   TEXT REFERENCES accounts(id),
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT COLLATE "C" PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL DEFAULT '',
    prefix          TEXT NOT NULL,
    digest          TEXT NOT NULL UNIQUE,
    scopes          TEXT NOT NULL,
    tier            TEXT NOT NULL,
    allow_ips       TEXT NOT NULL DEFAULT '',
    test            BOOLEAN NOT NULL DEFAULT FALSE,
    signing_secret  TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_used_at    BIGINT,
    revoked_at      BIGINT
);
CREATE INDEX api_keys_account ON api_keys(account_id, revoked_at);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    account_id  TEXT,
    key_id      TEXT,
    action      TEXT NOT NULL,
    ip          TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_account ON audit_log(account_id, at);

CREATE TABLE key_usage (
    key_id         TEXT NOT NULL,
    hour           BIGINT NOT NULL,
    requests       BIGINT NOT NULL DEFAULT 0,
    auth_failures  BIGINT NOT NULL DEFAULT 0,
    rate_limited   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, hour)
);
