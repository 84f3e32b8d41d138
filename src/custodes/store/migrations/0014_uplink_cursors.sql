-- The uplink's place in each stream it publishes to the hub: the last sequence number the hub's
-- NATS server acknowledged. It moves only on an ack, so a link down for days resumes here.
CREATE TABLE uplink_cursors (
    stream TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    hash TEXT,             -- audit: the hash of entry seq as sent, to notice a rewrite under it
    at REAL NOT NULL
);
