-- People who sign in, their sessions and their API tokens. Only hashes of secrets are kept:
-- argon2id for passwords, SHA-256 for the random session and token values (which carry enough
-- entropy that a fast hash cannot be reversed), so a copy of the database signs no one in.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,   -- custodes.auth.roles.Role
    cameras       TEXT,               -- JSON list of camera names; NULL: every camera
    password_hash TEXT    NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    REAL    NOT NULL,
    password_changed_at REAL NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,   -- SHA-256 hex of the cookie value
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf        TEXT    NOT NULL,      -- the double-submit token bound to this session
    created_at  REAL    NOT NULL,
    expires_at  REAL    NOT NULL,
    address     TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,   -- SHA-256 hex of the token
    created_at  REAL    NOT NULL,
    expires_at  REAL,                      -- NULL: until revoked
    revoked_at  REAL
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
