-- Recorded segments: one row per MP4 file under recordings/.
CREATE TABLE segments (
    id        INTEGER PRIMARY KEY,
    camera    TEXT    NOT NULL,
    start     REAL    NOT NULL,   -- UTC epoch seconds of the first frame
    "end"     REAL    NOT NULL,   -- UTC epoch seconds after the last frame
    duration  REAL    NOT NULL,
    bytes     INTEGER NOT NULL,
    path      TEXT    NOT NULL UNIQUE  -- relative to the recordings folder
);
CREATE INDEX segments_camera_start ON segments (camera, start);
CREATE INDEX segments_start ON segments (start);

-- Files that could not be indexed, kept aside with the reason.
CREATE TABLE quarantine (
    id      INTEGER PRIMARY KEY,
    camera  TEXT    NOT NULL,
    at      REAL    NOT NULL,
    path    TEXT    NOT NULL,   -- relative to the quarantine folder
    bytes   INTEGER NOT NULL,
    reason  TEXT    NOT NULL
);

-- Footage protected from deletion (a case, a complaint, an incident).
CREATE TABLE holds (
    id          INTEGER PRIMARY KEY,
    camera      TEXT,             -- NULL: every camera
    start       REAL    NOT NULL,
    "end"       REAL    NOT NULL,
    reason      TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    created_by  TEXT    NOT NULL,
    expires_at  REAL,             -- NULL: until released
    released_at REAL,
    released_by TEXT
);

-- Proof of deletion: one row per retention pass that deleted anything.
CREATE TABLE deletion_passes (
    id        INTEGER PRIMARY KEY,
    at        REAL    NOT NULL,
    trigger   TEXT    NOT NULL,   -- age | quota | emergency | reconcile
    segments  INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    details   TEXT    NOT NULL    -- JSON: per camera {segments, bytes, from, to}
);
CREATE INDEX deletion_passes_at ON deletion_passes (at);

-- Camera availability transitions (online / offline with reason).
CREATE TABLE camera_states (
    id      INTEGER PRIMARY KEY,
    camera  TEXT NOT NULL,
    at      REAL NOT NULL,
    state   TEXT NOT NULL,
    reason  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX camera_states_camera_at ON camera_states (camera, at);
