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
    Column("acknowledged_at", Float),
    Column("acknowledged_by", Text),
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

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", Text, nullable=False),
    Column("legal_basis", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("cameras", Text, nullable=False),
    Column("scope_start", Float, nullable=False),
    Column("scope_end", Float, nullable=False),
    Column("watchlist", Integer, nullable=False),
    Column("opened_by", Text, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", Float),
    Column("decision_note", Text),
    Column("expires_at", Float, nullable=False),
    Column("closed_by", Text),
    Column("closed_at", Float),
)

case_holds = Table(
    "case_holds",
    metadata,
    Column("case_id", Integer, ForeignKey("cases.id"), primary_key=True),
    Column("hold_id", Integer, ForeignKey("holds.id"), primary_key=True),
)

case_subjects = Table(
    "case_subjects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("label", Text, nullable=False),
    Column("added_by", Text, nullable=False),
    Column("added_at", Float, nullable=False),
    Column("descriptor", LargeBinary),
    Column("crop", LargeBinary),
    Column("wiped_at", Float),
)

case_alerts = Table(
    "case_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("subject_id", Integer, ForeignKey("case_subjects.id"), nullable=False),
    Column("face_id", Integer, ForeignKey("faces.id", ondelete="SET NULL")),
    Column("camera", Text, nullable=False),
    Column("seen_at", Float, nullable=False),
    Column("distance", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", Float),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("cameras", Text),
    Column("password_hash", Text, nullable=False),
    Column("disabled", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("password_changed_at", Float, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("address", Text),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("token_hash", Text, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
)

# 0008: failed sign-ins kept across restarts, each token's parent, segment totals per camera.
api_tokens.append_column(Column("parent_id", Integer, ForeignKey("api_tokens.id")))

login_failures = Table(
    "login_failures",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last", Float, nullable=False),
    Column("locked_until", Float, nullable=False),
)

segment_totals = Table(
    "segment_totals",
    metadata,
    Column("camera", Text, primary_key=True),
    Column("segments", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
)

# 0005_faces: sealed face descriptors, and the gallery of enrolled people.
faces.append_column(Column("sealed", LargeBinary))

gallery_people = Table(
    "gallery_people",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", Text, nullable=False),
    Column("basis_kind", Text, nullable=False),
    Column("basis_reference", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", Text, nullable=False),
)

gallery_photos = Table(
    "gallery_photos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("person_id", Integer, ForeignKey("gallery_people.id", ondelete="CASCADE"),
           nullable=False),
    Column("descriptor", LargeBinary, nullable=False),
    Column("crop", LargeBinary, nullable=False),
)

# 0009_separation_of_duties: grants of privileged roles, the pinned profile, gallery approval.
gallery_people.append_column(Column("case_id", Integer, ForeignKey("cases.id")))
gallery_people.append_column(Column("approved_by", Text))  # the second person; NULL: unmatched
gallery_people.append_column(Column("approved_at", Float))

user_grants = Table(
    "user_grants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False),  # custodes.auth.grants.GrantKind
    Column("user_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("cameras", Text),
    Column("requested_by", Text, nullable=False),
    Column("requested_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", Float),
)

node_settings = Table(
    "node_settings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("set_at", Float, nullable=False),
    Column("set_by", Text, nullable=False),
)

case_members = Table(
    "case_members",
    metadata,
    Column("case_id", Integer, ForeignKey("cases.id"), primary_key=True),
    Column("name", Text, primary_key=True),
    Column("added_by", Text, nullable=False),
    Column("added_at", Float, nullable=False),
)

subject_access_requests = Table(
    "subject_access_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", Text, nullable=False),
    Column("requester", Text, nullable=False),
    Column("requester_key", Text, nullable=False),
    Column("identity_check", Text, nullable=False),
    Column("identity_checked_by", Text, nullable=False),
    Column("identity_checked_at", Float, nullable=False),
    Column("camera", Text, nullable=False),
    Column("scope_start", Float, nullable=False),
    Column("scope_end", Float, nullable=False),
    Column("photo", LargeBinary),
    Column("recorded_by", Text, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("decided_by", Text),
    Column("decided_at", Float),
    Column("decision_note", Text),
    Column("expires_at", Float, nullable=False),
    Column("export_id", Text),
    Column("exported_at", Float),
)

# 0011_account_administration: forced password changes; where sessions and tokens were used.
users.append_column(Column("must_change_password", Integer, nullable=False, server_default="0"))
sessions.append_column(Column("handle", Text, unique=True))
sessions.append_column(Column("last_used_at", Float))
sessions.append_column(Column("last_address", Text))
sessions.append_column(Column("user_agent", Text))
api_tokens.append_column(Column("last_used_at", Float))
api_tokens.append_column(Column("last_address", Text))

uplink_cursors = Table(
    "uplink_cursors",
    metadata,
    Column("stream", Text, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", Text),
    Column("at", Float, nullable=False),
)

# 0015_case_use_log: each use of face search in a case, its results, who verified them, and
# the authorisation the case rests on (custodes.privacy.case_log).
case_uses = Table(
    "case_uses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", Integer, ForeignKey("cases.id"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float, nullable=False),
    Column("reference_db", Text, nullable=False),
    Column("input", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("results", Integer, nullable=False),
)

case_use_results = Table(
    "case_use_results",
    metadata,
    Column("use_id", Integer, ForeignKey("case_uses.id"), primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("face_id", Integer),
    Column("camera", Text, nullable=False),
    Column("start", Float, nullable=False),
    Column("distance", Float, nullable=False),
    Column("level", Text, nullable=False),
    Column("subject_id", Integer),
)

case_verifications = Table(
    "case_verifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("use_id", Integer, nullable=False),
    Column("rank", Integer, nullable=False),
    Column("verified_by", Text, nullable=False),
    Column("verified_at", Float, nullable=False),
    Column("verdict", Text, nullable=False),
    Column("note", Text),
)

case_authorisations = Table(
    "case_authorisations",
    metadata,
    Column("case_id", Integer, ForeignKey("cases.id"), primary_key=True),
    Column("reference", Text, nullable=False),
    Column("authorised_at", Float, nullable=False),
    Column("recorded_by", Text, nullable=False),
    Column("recorded_at", Float, nullable=False),
)
