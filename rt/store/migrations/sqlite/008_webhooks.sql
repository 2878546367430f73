-- Webhook endpoints and the outbox of deliveries. A trigger on events writes one pending delivery per enabled
-- endpoint of the account that wants the event, in the transaction that stores the event: whatever path wrote it,
-- a crash after the commit loses no delivery. Times: created_at epoch ms; *_us epoch microseconds.
CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    url              TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    secrets          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'enabled',
    disabled_reason  TEXT,
    failing_since_us INTEGER,
    created_at       INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints(account_id, status);

-- One row per event name an endpoint wants (`*` for all of them); n keeps the order they were given in.
CREATE TABLE webhook_subscriptions (
    endpoint_id  TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event        TEXT NOT NULL,
    n            INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event)
);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL,
    endpoint_id       TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id          TEXT NOT NULL,
    event             TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'pending',
    attempts          INTEGER NOT NULL DEFAULT 0,
    created_us        INTEGER NOT NULL,
    next_attempt_us   INTEGER,
    last_status_code  INTEGER,
    claimed_by        TEXT,
    claimed_until_us  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_us) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_account ON webhook_deliveries(account_id, created_us);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    n            INTEGER NOT NULL,
    at_us        INTEGER NOT NULL,
    status_code  INTEGER,
    latency_ms   REAL NOT NULL,
    error        TEXT,
    response     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, n)
);

CREATE TRIGGER events_webhook_outbox AFTER INSERT ON events WHEN NEW.published = 0 BEGIN INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event, created_us, next_attempt_us) SELECT 'whd_' || substr(NEW.id, 5) || substr(e.id, 5), e.account_id, e.id, NEW.id, NEW.event, NEW.ts_us, NEW.ts_us FROM webhook_endpoints e WHERE e.account_id = NEW.account_id AND e.status = 'enabled' AND EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.endpoint_id = e.id AND s.event IN (NEW.event, '*')); END;
