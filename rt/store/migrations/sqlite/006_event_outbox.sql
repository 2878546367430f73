-- The events table is also the outbox: an event is stored unpublished with its write and marked once the bus has it,
-- so events whose publish a crash cut off are published after all. Events stored before this were published.
ALTER TABLE events ADD COLUMN published INTEGER NOT NULL DEFAULT 1;
CREATE INDEX events_unpublished ON events(ts_us) WHERE published = 0;
