-- The record an AI-Act-style log of remote biometric identification needs, per case: each use
-- of face search with its start and end, the reference database searched and the input; each
-- result returned; who verified each result (two persons, separately); and the reference and
-- time of the authorisation the case rests on (given by the approver, from the authority's
-- decision: not the time custodes recorded it).
CREATE TABLE case_uses (
    id            INTEGER PRIMARY KEY,
    case_id       INTEGER NOT NULL REFERENCES cases (id),
    kind          TEXT    NOT NULL,   -- search
    actor         TEXT    NOT NULL,
    started_at    REAL    NOT NULL,
    ended_at      REAL    NOT NULL,
    reference_db  TEXT    NOT NULL,   -- JSON: what was searched (cameras, window, faces, model)
    input         TEXT    NOT NULL,   -- JSON: the case subjects compared (ids, labels)
    outcome       TEXT    NOT NULL,
    results       INTEGER NOT NULL
);
CREATE INDEX case_uses_case ON case_uses (case_id);

CREATE TABLE case_use_results (
    use_id      INTEGER NOT NULL REFERENCES case_uses (id),
    rank        INTEGER NOT NULL,   -- 1: the nearest
    face_id     INTEGER,            -- the face track (NULL once retention deleted it)
    camera      TEXT    NOT NULL,
    start       REAL    NOT NULL,
    distance    REAL    NOT NULL,
    level       TEXT    NOT NULL,   -- match | possible (custodes.faces.calibration)
    subject_id  INTEGER,
    PRIMARY KEY (use_id, rank)
);

CREATE TABLE case_verifications (
    id           INTEGER PRIMARY KEY,
    use_id       INTEGER NOT NULL,
    rank         INTEGER NOT NULL,
    verified_by  TEXT    NOT NULL,
    verified_at  REAL    NOT NULL,
    verdict      TEXT    NOT NULL,   -- same_person | not_same_person | cannot_tell
    note         TEXT,
    FOREIGN KEY (use_id, rank) REFERENCES case_use_results (use_id, rank),
    UNIQUE (use_id, rank, verified_by)
);

CREATE TABLE case_authorisations (
    case_id      INTEGER PRIMARY KEY REFERENCES cases (id),
    reference    TEXT    NOT NULL,   -- e.g. the court order or the authority's decision number
    authorised_at REAL   NOT NULL,   -- when the authority authorised the use
    recorded_by  TEXT    NOT NULL,
    recorded_at  REAL    NOT NULL
);
