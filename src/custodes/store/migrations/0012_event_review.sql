-- The review queue: who acknowledged an event, and when. An event is acknowledged once;
-- the audit log holds the same fact under its hash chain.
ALTER TABLE events ADD COLUMN acknowledged_at REAL;
ALTER TABLE events ADD COLUMN acknowledged_by TEXT;
CREATE INDEX events_unacknowledged ON events (start) WHERE acknowledged_at IS NULL;
