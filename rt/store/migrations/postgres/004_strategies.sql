-- Deployed strategies: their configuration, limits, status and the state they keep across restarts.
CREATE TABLE strategies (
    id           TEXT COLLATE "C" PRIMARY KEY,
    account_id   TEXT NOT NULL,
    name         TEXT NOT NULL,
    type         TEXT NOT NULL,
    exchange     TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    config       TEXT NOT NULL,
    risk_limits  TEXT NOT NULL,
    status       TEXT NOT NULL,
    state        TEXT NOT NULL,
    stop_reason  TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX strategies_account ON strategies(account_id, created_at);
CREATE INDEX positions_strategy ON positions(strategy_id, status);
