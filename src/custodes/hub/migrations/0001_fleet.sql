-- The hub's tables. Every table a site feeds is unique on (site, seq): the hub's writes are
-- idempotent on the message id, so a message delivered twice is counted once.

CREATE TABLE sites (
    name TEXT PRIMARY KEY,
    grp TEXT NOT NULL,                       -- the municipality (or other group) it belongs to
    public_key TEXT NOT NULL,                -- the node's Ed25519 signing key, PEM
    password_hash TEXT NOT NULL,             -- bcrypt of its NATS credential
    enrolled_at DOUBLE PRECISION NOT NULL,
    last_heard DOUBLE PRECISION,             -- when the hub last received anything from it
    health JSONB,                            -- its latest health message
    health_at DOUBLE PRECISION,
    audit_verified_seq BIGINT NOT NULL DEFAULT 0,   -- the chain verified without a gap up to
    audit_verified_hash TEXT NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
    audit_max_seq BIGINT NOT NULL DEFAULT 0,
    chain_broken_at BIGINT                   -- the first entry that did not follow, if any
);

CREATE TABLE site_keys (
    id BIGSERIAL PRIMARY KEY,
    site TEXT NOT NULL REFERENCES sites(name),
    public_key TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE audit_entries (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    address TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,                    -- the JSON text as the site hashed it
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, seq)
);

-- An entry received under a number the hub already holds, with another hash: a rewritten or
-- cut-back log. The first version received is kept; this one is kept beside it as evidence.
CREATE TABLE audit_conflicts (
    id BIGSERIAL PRIMARY KEY,
    site TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    entry JSONB NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    UNIQUE (site, seq, hash)
);

CREATE TABLE checkpoints (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,                     -- the site's checkpoint row id (the stream's seq)
    entry_seq BIGINT NOT NULL,               -- the audit entry it signs
    hash TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    signature BYTEA NOT NULL,
    signature_ok BOOLEAN NOT NULL,           -- against the key registered when it arrived
    matched BOOLEAN,                         -- the entry's hash equals it (NULL: not yet seen)
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (site, seq)
);

CREATE TABLE configs (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    profile TEXT,
    cameras JSONB NOT NULL,
    digest JSONB NOT NULL,
    PRIMARY KEY (site, seq)
);

CREATE TABLE camera_states (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    camera TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (site, seq)
);

CREATE TABLE coverage (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,                     -- the minute (Unix time / 60)
    cameras JSONB NOT NULL,                  -- seconds recorded in that minute, per camera
    PRIMARY KEY (site, seq)
);

CREATE TABLE events (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    camera TEXT NOT NULL,
    kind TEXT NOT NULL,
    start_at DOUBLE PRECISION NOT NULL,
    end_at DOUBLE PRECISION,
    data JSONB NOT NULL,
    PRIMARY KEY (site, seq)
);
CREATE INDEX events_start ON events (start_at);

CREATE TABLE deletion_passes (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    trigger TEXT NOT NULL,
    segments BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    details JSONB NOT NULL,
    PRIMARY KEY (site, seq)
);

CREATE TABLE holds (
    site TEXT NOT NULL REFERENCES sites(name),
    seq BIGINT NOT NULL,
    camera TEXT,
    start_at DOUBLE PRECISION NOT NULL,
    end_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT NOT NULL,
    expires_at DOUBLE PRECISION,
    PRIMARY KEY (site, seq)
);

CREATE TABLE alarms (
    id BIGSERIAL PRIMARY KEY,
    site TEXT NOT NULL,
    kind TEXT NOT NULL,
    raised_at DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL,
    cleared_at DOUBLE PRECISION
);
CREATE INDEX alarms_open ON alarms (site, kind) WHERE cleared_at IS NULL;

-- Messages the hub could not take (bad JSON, a body that does not fit its stream): kept, said.
CREATE TABLE rejected (
    id BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL
);

-- What the witness received is never rewritten: not by ingest (ON CONFLICT DO NOTHING), and
-- not by anyone with a hub login who tries it in SQL.
CREATE FUNCTION custodes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION custodes_append_only();
CREATE TRIGGER audit_conflicts_append_only BEFORE UPDATE OR DELETE ON audit_conflicts
    FOR EACH ROW EXECUTE FUNCTION custodes_append_only();
