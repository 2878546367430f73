-- Real venues per account: which ccxt exchange, its credentials sealed with the server's secret key (never plain),
-- and its options (sandbox, base-URL override, ccxt options) as JSON. Times are epoch milliseconds.
CREATE TABLE venues (
    account_id   TEXT COLLATE "C" NOT NULL REFERENCES accounts(id),
    exchange     TEXT COLLATE "C" NOT NULL,
    credentials  TEXT NOT NULL,
    options      TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, exchange)
);
