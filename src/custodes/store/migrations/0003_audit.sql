-- The audit log: append-only, each entry carrying the hash of the one before it, so that any
-- modified, deleted, inserted or reordered entry breaks the chain (custodes.audit.verify).
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,   -- 1, 2, 3, ... without gaps
    at        REAL    NOT NULL,      -- unix time
    actor     TEXT    NOT NULL,      -- user name, or "system", or "anonymous"
    address   TEXT,                  -- client address for requests over the network
    action    TEXT    NOT NULL,      -- e.g. login, playback, export, face.search, case.approve
    target    TEXT    NOT NULL,      -- what it was done to: camera, case, user, range
    outcome   TEXT    NOT NULL,      -- ok | refused | failed
    detail    TEXT    NOT NULL,      -- JSON object
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);

-- Signed checkpoints: the node's Ed25519 signature over (seq, hash) at intervals, so that a
-- rewrite of the whole chain by someone without the key is detected too.
CREATE TABLE audit_checkpoints (
    id        INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT    NOT NULL,
    at        REAL    NOT NULL,
    signature BLOB    NOT NULL
);

-- Defence in depth: custodes itself can never change the past. (Someone with the file can
-- drop these triggers; the hash chain and the checkpoints catch that.)
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
