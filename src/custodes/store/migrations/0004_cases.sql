-- Cases: the only context in which anyone may search recordings for a person's face or (police
-- profile) receive live alerts for them. Opened by an investigator, decided by a second person.
CREATE TABLE cases (
    id            INTEGER PRIMARY KEY,
    reference     TEXT    NOT NULL,   -- e.g. the court order number
    legal_basis   TEXT    NOT NULL,
    purpose       TEXT    NOT NULL,
    cameras       TEXT    NOT NULL,   -- JSON list: the cameras in scope
    scope_start   REAL    NOT NULL,   -- UTC epoch seconds: the footage in scope
    scope_end     REAL    NOT NULL,
    watchlist     INTEGER NOT NULL DEFAULT 0,   -- live alerts asked for (police profile only)
    opened_by     TEXT    NOT NULL,
    opened_at     REAL    NOT NULL,
    status        TEXT    NOT NULL,   -- pending | approved | rejected | closed | expired
    decided_by    TEXT,
    decided_at    REAL,
    decision_note TEXT,
    expires_at    REAL    NOT NULL,   -- nothing may be done in the case from this time on
    closed_by     TEXT,
    closed_at     REAL
);
CREATE INDEX cases_status ON cases (status);

-- The holds an approved case placed on the footage in its scope (released when it ends).
CREATE TABLE case_holds (
    case_id INTEGER NOT NULL REFERENCES cases (id),
    hold_id INTEGER NOT NULL REFERENCES holds (id),
    PRIMARY KEY (case_id, hold_id)
);

-- One row per subject photo: its descriptor and face crop, each sealed with the node's
-- biometric key and bound to the row ("case:<case>:subject:<id>:..."). Both are wiped when the
-- case ends: a subject's biometric data lives no longer than the case that justified it.
CREATE TABLE case_subjects (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases (id),
    label       TEXT    NOT NULL,
    added_by    TEXT    NOT NULL,
    added_at    REAL    NOT NULL,
    descriptor  BLOB,               -- sealed 128 float32; NULL once wiped
    crop        BLOB,               -- sealed JPEG; NULL once wiped
    wiped_at    REAL
);
CREATE INDEX case_subjects_case ON case_subjects (case_id);

-- Live watchlist alerts (police profile): a candidate until a second person confirms it.
CREATE TABLE case_alerts (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases (id),
    subject_id  INTEGER NOT NULL REFERENCES case_subjects (id),
    face_id     INTEGER REFERENCES faces (id) ON DELETE SET NULL,
    camera      TEXT    NOT NULL,
    seen_at     REAL    NOT NULL,   -- start of the face track
    distance    REAL    NOT NULL,
    created_at  REAL    NOT NULL,
    status      TEXT    NOT NULL,   -- candidate | confirmed | dismissed
    decided_by  TEXT,
    decided_at  REAL
);
CREATE INDEX case_alerts_case ON case_alerts (case_id);
