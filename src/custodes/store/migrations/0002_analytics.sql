-- Motion intervals per camera: the timeline shows them, motion-only recording keeps by them.
CREATE TABLE motion (
    id      INTEGER PRIMARY KEY,
    camera  TEXT NOT NULL,
    start   REAL NOT NULL,
    "end"   REAL NOT NULL,
    peak    REAL NOT NULL   -- largest share of the frame in motion, 0..1
);
CREATE INDEX motion_camera_start ON motion (camera, start);

-- Events (motion, face seen), each with an optional redacted snapshot.
CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    camera    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    start     REAL NOT NULL,
    "end"     REAL,
    data      TEXT NOT NULL,   -- JSON
    snapshot  TEXT             -- relative to the snapshots folder
);
CREATE INDEX events_camera_start ON events (camera, start);
CREATE INDEX events_start ON events (start);

-- One row per face track: where and when a face was seen, and (only where the deployment
-- allows it) the descriptor of its best picture. Descriptors are biometric data.
CREATE TABLE faces (
    id         INTEGER PRIMARY KEY,
    camera     TEXT    NOT NULL,
    start      REAL    NOT NULL,
    "end"      REAL    NOT NULL,
    detections INTEGER NOT NULL,
    box        TEXT    NOT NULL,   -- JSON [x, y, w, h] of the best face, analysed-frame pixels
    quality    REAL    NOT NULL,
    embedding  BLOB,               -- 128 float32, NULL when descriptors are off
    event_id   INTEGER REFERENCES events (id) ON DELETE SET NULL
);
CREATE INDEX faces_camera_start ON faces (camera, start);
