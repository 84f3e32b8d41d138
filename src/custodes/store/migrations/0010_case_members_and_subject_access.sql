-- Who works a case besides its opener, named when it is opened (need to know). Members and the
-- oversight roles see the case; only its opener and members search it or download its
-- unredacted exports; a member never decides it.
CREATE TABLE case_members (
    case_id   INTEGER NOT NULL REFERENCES cases (id),
    name      TEXT    NOT NULL,
    added_by  TEXT    NOT NULL,
    added_at  REAL    NOT NULL,
    PRIMARY KEY (case_id, name)
);

-- Subject access requests: recorded by one officer with how the requester's identity was
-- checked, decided by a second one, exported at most once. The requester's photo is sealed
-- with the node's biometric key, bound to the row, so the decider can compare it with the
-- identity check; it is wiped when the export is made, the request rejected or lapsed.
CREATE TABLE subject_access_requests (
    id                  INTEGER PRIMARY KEY,
    reference           TEXT    NOT NULL,
    requester           TEXT    NOT NULL,   -- the person whose footage it is
    requester_key       TEXT    NOT NULL,   -- the name normalised, for the rate limit
    identity_check      TEXT    NOT NULL,   -- how the identity was checked (document seen...)
    identity_checked_by TEXT    NOT NULL,
    identity_checked_at REAL    NOT NULL,
    camera              TEXT    NOT NULL,
    scope_start         REAL    NOT NULL,
    scope_end           REAL    NOT NULL,
    photo               BLOB,               -- sealed; NULL once wiped
    recorded_by         TEXT    NOT NULL,
    recorded_at         REAL    NOT NULL,
    status              TEXT    NOT NULL,   -- pending | approved | rejected | exported | expired
    decided_by          TEXT,
    decided_at          REAL,
    decision_note       TEXT,
    expires_at          REAL    NOT NULL,   -- lapses unless exported by then
    export_id           TEXT,
    exported_at         REAL
);
CREATE INDEX subject_access_requester ON subject_access_requests (requester_key, recorded_at);
CREATE INDEX subject_access_recorder ON subject_access_requests (recorded_by, recorded_at);
