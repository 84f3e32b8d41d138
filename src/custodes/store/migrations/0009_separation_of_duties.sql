-- Separation of duties (issue 10, items 7, 10 and 15).

-- A grant of a powerful role (administrator, investigator, approver), or a password reset of
-- an account that holds one, waits here until a different administrator confirms it: one
-- administrator alone cannot make the accounts that open, approve and search a case.
CREATE TABLE user_grants (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('add', 'role', 'password')),
    user_name    TEXT NOT NULL,
    role         TEXT NOT NULL,   -- the role granted; for a password reset, the role it unlocks
    cameras      TEXT,            -- kind 'add': JSON list of cameras, NULL: every camera
    requested_by TEXT NOT NULL,
    requested_at REAL NOT NULL,
    expires_at   REAL NOT NULL,   -- an unconfirmed grant lapses
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'confirmed', 'cancelled', 'expired')),
    decided_by   TEXT,
    decided_at   REAL
);
CREATE INDEX user_grants_status ON user_grants (status, user_name);

-- Settings the node pins at its first start and changes only by an explicit, audited command
-- (the deployment profile): a second config, or an environment variable, cannot change them.
CREATE TABLE node_settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL,
    set_at REAL NOT NULL,
    set_by TEXT NOT NULL
);

-- A gallery entry counts (is matched) only once a second person has approved it: for a case
-- basis, the approver of that case (case_id); for a consent, an approver of the node. Entries
-- made before this migration stay unapproved, so unmatched, until someone approves them.
ALTER TABLE gallery_people ADD COLUMN case_id INTEGER REFERENCES cases (id);
ALTER TABLE gallery_people ADD COLUMN approved_by TEXT;
ALTER TABLE gallery_people ADD COLUMN approved_at REAL;
