-- Face descriptors are biometric data: from here on they are stored only sealed (AES-256-GCM
-- under the node's biometric key, which lives outside the database; see custodes.keys).
-- `faces.embedding` stays for the rows written before this migration, which SQL cannot seal:
-- custodes.faces.descriptors.FaceDescriptors.seal_legacy() seals and clears them at start.
ALTER TABLE faces ADD COLUMN sealed BLOB;  -- sealed 128 float32, NULL when descriptors are off

CREATE TRIGGER faces_no_plaintext_insert BEFORE INSERT ON faces
WHEN NEW.embedding IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'faces.embedding: plaintext descriptors are not stored; seal them');
END;

CREATE TRIGGER faces_no_plaintext_update BEFORE UPDATE OF embedding ON faces
WHEN NEW.embedding IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'faces.embedding: plaintext descriptors are not stored; seal them');
END;

-- The gallery: people enrolled for matching, each with the legal basis that allows it and an
-- expiry after which the entry is deleted.
CREATE TABLE gallery_people (
    id              INTEGER PRIMARY KEY,
    reference       TEXT NOT NULL,   -- who this is for the case or consent record, e.g. "subject A"
    basis_kind      TEXT NOT NULL CHECK (basis_kind IN ('case', 'consent')),
    basis_reference TEXT NOT NULL CHECK (basis_reference <> ''),
    expires_at      REAL NOT NULL,
    created_at      REAL NOT NULL,
    created_by      TEXT NOT NULL,
    updated_at      REAL NOT NULL,
    updated_by      TEXT NOT NULL
);
CREATE INDEX gallery_people_expires ON gallery_people (expires_at);

-- One row per reference photo: its descriptor and its face crop (JPEG), both sealed.
CREATE TABLE gallery_photos (
    id          INTEGER PRIMARY KEY,
    person_id   INTEGER NOT NULL REFERENCES gallery_people (id) ON DELETE CASCADE,
    descriptor  BLOB NOT NULL,
    crop        BLOB NOT NULL
);
CREATE INDEX gallery_photos_person ON gallery_photos (person_id);
