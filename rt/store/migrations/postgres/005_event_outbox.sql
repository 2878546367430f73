-- The events table is also the outbox: an event is stored unpublished with its write and marked once the bus has it,
-- so events whose publish a crash cut off are published after all. Events stored before this were published.
ALTER TABLE events ADD COLUMN published BOOLEAN NOT NULL DEFAULT true;
CREATE INDEX events_unpublished ON events (ts_us) WHERE NOT published;
