"""SQLAlchemy Core descriptions of the tables the migrations create, for building queries.

The migrations in ``migrations/`` are the source of truth; a test checks that these match.
"""

from sqlalchemy import Column, Float, ForeignKey, Integer, LargeBinary, MetaData, Table, Text

metadata = MetaData()

segments = Table(
    "segments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("duration", Float, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("path", Text, nullable=False, unique=True),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("path", Text, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("reason", Text, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("expires_at", Float),
    Column("released_at", Float),
    Column("released_by", Text),
)

deletion_passes = Table(
    "deletion_passes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("trigger", Text, nullable=False),
    Column("segments", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("details", Text, nullable=False),
)

camera_states = Table(
    "camera_states",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

motion = Table(
    "motion",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("peak", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float),
    Column("data", Text, nullable=False),
    Column("snapshot", Text),
)

faces = Table(
    "faces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("camera", Text, nullable=False),
    Column("start", Float, nullable=False),
    Column("end", Float, nullable=False),
    Column("detections", Integer, nullable=False),
    Column("box", Text, nullable=False),
    Column("quality", Float, nullable=False),
    Column("embedding", LargeBinary),
    Column("event_id", Integer, ForeignKey("events.id", ondelete="SET NULL")),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("at", Float, nullable=False),
    Column("actor", Text, nullable=False),
    Column("address", Text),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)
