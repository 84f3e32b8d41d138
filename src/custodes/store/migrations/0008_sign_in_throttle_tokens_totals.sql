-- Failed sign-ins, kept across restarts (custodes.auth.throttle). A row per key and scope:
-- "account" keys are an account name with the address it was tried from (a JSON pair), so
-- failures from one address never lock the account out for everyone else; "address" keys
-- are a client address (one address guessing many accounts).
CREATE TABLE login_failures (
    scope         TEXT    NOT NULL,   -- account | address
    key           TEXT    NOT NULL,
    failures      INTEGER NOT NULL,
    last          REAL    NOT NULL,   -- UTC epoch seconds of the last failure
    locked_until  REAL    NOT NULL,   -- UTC epoch seconds; 0: not locked
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_failures_last ON login_failures (last);

-- The API token a token was made with (NULL: made from a signed-in session). A token never
-- outlives its parent, and revoking a token revokes those made with it.
ALTER TABLE api_tokens ADD COLUMN parent_id INTEGER REFERENCES api_tokens (id);
CREATE INDEX api_tokens_parent ON api_tokens (parent_id);

-- Running totals of the segment index per camera, kept by triggers in the same transaction as
-- every change to it (whoever writes: recorder, retention, forget), so the status page does
-- not aggregate millions of rows on every refresh.
CREATE TABLE segment_totals (
    camera    TEXT    PRIMARY KEY,
    segments  INTEGER NOT NULL,
    bytes     INTEGER NOT NULL
);
INSERT INTO segment_totals (camera, segments, bytes)
    SELECT camera, count(*), coalesce(sum(bytes), 0) FROM segments GROUP BY camera;

CREATE TRIGGER segment_totals_insert AFTER INSERT ON segments
BEGIN
    INSERT INTO segment_totals (camera, segments, bytes) VALUES (NEW.camera, 1, NEW.bytes)
    ON CONFLICT (camera) DO UPDATE SET segments = segments + 1, bytes = bytes + NEW.bytes;
END;
CREATE TRIGGER segment_totals_delete AFTER DELETE ON segments
BEGIN
    UPDATE segment_totals SET segments = segments - 1, bytes = bytes - OLD.bytes
    WHERE camera = OLD.camera;
END;
CREATE TRIGGER segment_totals_update AFTER UPDATE OF camera, bytes ON segments
BEGIN
    UPDATE segment_totals SET segments = segments - 1, bytes = bytes - OLD.bytes
    WHERE camera = OLD.camera;
    INSERT INTO segment_totals (camera, segments, bytes) VALUES (NEW.camera, 1, NEW.bytes)
    ON CONFLICT (camera) DO UPDATE SET segments = segments + 1, bytes = bytes + NEW.bytes;
END;
