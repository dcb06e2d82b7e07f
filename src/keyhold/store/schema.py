"""The relational schema, shared by SQLite and PostgreSQL.

What is stored in the clear, and why (the operator docs repeat this list):
- account metadata: username, display name, birthdate, region, password hash (argon2id);
- the social graph (follows) and conversation membership, titles of groups, timestamps;
- message *metadata*: who sent what kind of message to which conversation when.
Message bodies, attachment bytes and attachment file names are only ever stored sealed
(AES-256-GCM under a conversation DEK, which is itself stored wrapped by a region KEK).
Times are integer milliseconds since the Unix epoch; ids of users and conversations are
database sequences, message ids are time-ordered and assigned by the writer.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
SequenceId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("display_name", String(64), nullable=False, server_default=""),
    Column("birthdate", String(10), nullable=False),
    Column("region", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("deleted_ms", BigInteger, nullable=True),
    Column("suspended_until_ms", BigInteger, nullable=False, server_default="0"),
    # Last per-user event sequence number handed out (see `events`).
    Column("event_seq", BigInteger, nullable=False, server_default="0"),
    # When the account was last disabled, suspended, banned or deleted: servers look for
    # recent changes to close the streams such an account still has open.
    Column("restricted_ms", BigInteger, nullable=False, server_default="0"),
    # Who may start a direct conversation with this member: everyone | friends | no_one;
    # NULL: the default of their age band (safety-policy.toml).
    Column("dm_audience", String(8), nullable=True),
)
Index("ix_users_restricted", users.c.restricted_ms)

sessions = Table(
    "sessions",
    metadata,
    # SHA-256 of the bearer token: a database leak does not leak usable tokens.
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # When the session was revoked (logout, password change, ban...); NULL while it is live.
    Column("revoked_ms", BigInteger, nullable=True),
    # The device the token belongs to (`devices`); NULL for a token issued before devices.
    Column("device_id", String(64), nullable=True),
)
Index("ix_sessions_revoked", sessions.c.revoked_ms)
Index("ix_sessions_device", sessions.c.user_id, sessions.c.device_id)

# A member's devices: each sign-in names one (the client's choice, else the server's). The id
# is what end-to-end encryption will address keys and to-device messages to.
devices = Table(
    "devices",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("display_name", String(100), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
)

# Sign-in attempts per client address and per account name, kept as SHA-256 digests rather than
# the address or name (a digest of an IPv4 address can be reversed by trying them all: rows are
# deleted once their window has passed). `failures` counts failed sign-ins in the window that
# started at `window_start_ms`; `pending` counts sign-ins being evaluated now, so that
# concurrent guesses cannot exceed the limit.
signin_throttle = Table(
    "signin_throttle",
    metadata,
    Column("key", LargeBinary(32), primary_key=True),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("pending", Integer, nullable=False, server_default="0"),
)
Index("ix_signin_throttle_window", signin_throttle.c.window_start_ms)

# (address, account) pairs that signed in successfully, as SHA-256 digests, with the time of
# the last success: such an address is held only to its own guess limit for that account, so
# strangers cannot lock an owner out of the addresses they use. Deleted after 30 days unused.
signin_known = Table(
    "signin_known",
    metadata,
    Column("key", LargeBinary(32), primary_key=True),
    Column("last_ms", BigInteger, nullable=False),
)
Index("ix_signin_known_last", signin_known.c.last_ms)

follows = Table(
    "follows",
    metadata,
    Column("follower_id", ForeignKey("users.id"), primary_key=True),
    Column("followee_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("created_ms", BigInteger, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # direct | group
    Column("encryption", String(8), nullable=False),  # standard | e2ee
    Column("title", String(100), nullable=False, server_default=""),
    # "<low user id>:<high user id>" for direct conversations: at most one per pair.
    Column("direct_key", String(64), nullable=True, unique=True),
    Column("created_by", ForeignKey("users.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("current_epoch", Integer, nullable=False, server_default="0"),
    Column("epoch_messages", Integer, nullable=False, server_default="0"),
    Column("epoch_started_ms", BigInteger, nullable=False, server_default="0"),
    Column("last_message_id", BigInteger, nullable=True),
    # Disappearing messages: each message sent while it is set expires this long after it
    # was sent (NULL: off).
    Column("disappear_after_s", Integer, nullable=True),
)

members = Table(
    "members",
    metadata,
    Column("conversation_id", ForeignKey("conversations.id"), primary_key=True),
    Column("user_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("joined_ms", BigInteger, nullable=False),
    Column("left_ms", BigInteger, nullable=True),
    Column("delivered_upto", BigInteger, nullable=False, server_default="0"),
    Column("read_upto", BigInteger, nullable=False, server_default="0"),
    # In a group: owner (its creator, then whoever it passes to) | admin | member.
    Column("role", String(8), nullable=False, server_default="member"),
    # While set, the membership is a message request from this user (a non-friend started
    # the conversation or added them): it sits in the requests inbox until accepted.
    Column("request_from", BigInteger, nullable=True),
    # A direct request its recipient deleted: they no longer see it (nor anything sent there
    # since), while its sender sees no change (a deleted request looks like one unanswered).
    Column("declined_ms", BigInteger, nullable=True),
)

# One member blocking another: stops messages, conversations, requests and group adds both ways.
blocks = Table(
    "blocks",
    metadata,
    Column("blocker_id", ForeignKey("users.id"), primary_key=True),
    Column("blocked_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("created_ms", BigInteger, nullable=False),
)

# A message not shown to one member: sent by someone they had blocked, in a group they share.
# Kept after an unblock (unblocking restores nothing retroactively).
hidden_messages = Table(
    "hidden_messages",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("message_id", BigInteger, primary_key=True),
)

# A guardian linked to a teen once both accepted: sees the teen's settings and with whom their
# conversations are, never content; may turn their DMs to off or friends.
guardian_links = Table(
    "guardian_links",
    metadata,
    Column("guardian_id", ForeignKey("users.id"), primary_key=True),
    Column("teen_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("guardian_accepted_ms", BigInteger, nullable=True),
    Column("teen_accepted_ms", BigInteger, nullable=True),
    # The guardian's DM setting for the teen (no_one | friends): the stricter of it and the
    # teen's own setting applies.
    Column("dm_audience", String(8), nullable=True),
)

conversation_keys = Table(
    "conversation_keys",
    metadata,
    Column("conversation_id", ForeignKey("conversations.id"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    # One wrap per region whose members take part: each region's staff reach a DEK
    # only through their own region's KEK.
    Column("region", String(16), primary_key=True),
    Column("kek_version", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=True),  # NULL once shredded
    Column("created_ms", BigInteger, nullable=False),
    Column("shredded_ms", BigInteger, nullable=True),
)
Index("ix_conversation_keys_kek", conversation_keys.c.region, conversation_keys.c.kek_version)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("conversation_id", ForeignKey("conversations.id"), nullable=False),
    Column("sender_id", ForeignKey("users.id"), nullable=False),
    Column("epoch", Integer, nullable=False),
    # "<sender id>:<client idempotency key>": a retried send finds the first one.
    Column("idem", String(100), nullable=True, unique=True),
    Column("kind", String(12), nullable=False),  # text | attachment
    Column("body", LargeBinary, nullable=True),  # sealed; NULL once deleted
    Column("attachment_id", String(40), nullable=True),
    Column("sent_ms", BigInteger, nullable=False),
    Column("deleted_ms", BigInteger, nullable=True),
    # e2ee messages: the device that sent it, and its franking (JSON: version, commitment,
    # the service's key id and tag), NULL when the sender did not frank it.
    Column("sender_device", String(64), nullable=True),
    Column("franking", Text, nullable=True),
    # When a disappearing message is deleted (its conversation's timer when it was sent).
    Column("expires_ms", BigInteger, nullable=True),
    # Safety review of a `standard` message the scanning pipeline held: "pending" (stored, shown
    # to its sender only, until a moderator releases it: NULL again) or "refused" (deleted,
    # never shown to anyone else). NULL for every other message.
    Column("review", String(8), nullable=True),
)
Index("ix_messages_expiry", messages.c.expires_ms)
Index("ix_messages_conversation", messages.c.conversation_id, messages.c.id)

# What the scanning pipeline decided about a `standard` send or upload, for every verdict but
# `allow`: action, category, scores and which rules or signals fired. Never the content.
# `message_id` is NULL for a blocked send (nothing was stored); `attachment_id` is set for an
# upload's verdict, which the send that carries the file then takes on.
scan_verdicts = Table(
    "scan_verdicts",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("message_id", BigInteger, nullable=True, index=True),
    Column("attachment_id", String(40), nullable=True, index=True),
    Column("conversation_id", ForeignKey("conversations.id"), nullable=False),
    Column("sender_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("action", String(8), nullable=False),  # flag | hold | block
    Column("category", String(32), nullable=True),
    Column("policy", String(200), nullable=False, server_default=""),
    Column("scores", Text, nullable=False, server_default="{}"),  # JSON: category -> 0..1
    Column("fired", Text, nullable=False, server_default="[]"),  # JSON: rule and signal names
    Column("created_ms", BigInteger, nullable=False),
)

attachments = Table(
    "attachments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("conversation_id", ForeignKey("conversations.id"), nullable=False, index=True),
    Column("uploader_id", ForeignKey("users.id"), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sealed_meta", LargeBinary, nullable=False),  # file name and type, sealed
    Column("created_ms", BigInteger, nullable=False),
    Column("deleted_ms", BigInteger, nullable=True),
)

events = Table(
    "events",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("type", String(40), nullable=False),
    Column("conversation_id", BigInteger, nullable=True),
    Column("message_id", BigInteger, nullable=True),
    # Event details (receipts, membership); never `standard` message content, which is loaded
    # and opened for the recipient when the event is delivered. A to-device event keeps what
    # one device sent another (end-to-end encrypted, or a verification step) until the device
    # has reconnected past it.
    Column("data", Text, nullable=False, server_default="{}"),
    Column("created_ms", BigInteger, nullable=False),
    # For one of the user's devices only (to-device messages, one-time key counts); NULL for all.
    Column("device_id", String(64), nullable=True),
)
# Device events are few: a partial index finds a device's own without growing the send path's
# inserts (which write device_id NULL).
Index(
    "ix_events_device",
    events.c.user_id,
    events.c.device_id,
    events.c.seq,
    sqlite_where=events.c.device_id.is_not(None),
    postgresql_where=events.c.device_id.is_not(None),
)

__all__ = [
    "attachments",
    "conversation_keys",
    "conversations",
    "events",
    "follows",
    "members",
    "messages",
    "metadata",
    "sessions",
    "signin_known",
    "signin_throttle",
    "users",
]

# --- governed access (staff, cases, holds, the access log) ------------------------------------

staff = Table(
    "staff",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    # The TOTP seed, sealed under the staff member's region KEK (never stored in the clear).
    Column("totp_sealed", LargeBinary, nullable=False),
    Column("totp_kek_version", Integer, nullable=False),
    Column("role", String(16), nullable=False),  # moderator | legal | auditor | admin
    Column("region", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("last_totp_step", BigInteger, nullable=False, server_default="0"),
)

staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("token_hash", LargeBinary(32), primary_key=True),
    Column("staff_id", ForeignKey("staff.id"), nullable=False, index=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, server_default="0"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),  # report | legal
    Column("region", String(16), nullable=False),
    # report: open → decided (→ appealed → appeal_decided); legal: pending → approved | refused → closed
    Column("status", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("reporter_id", ForeignKey("users.id"), nullable=True),
    Column("conversation_id", ForeignKey("conversations.id"), nullable=True),
    Column("created_by", ForeignKey("staff.id"), nullable=True),
    Column("assigned_to", ForeignKey("staff.id"), nullable=True),
    Column("approved_by", ForeignKey("staff.id"), nullable=True),
    # Category, agency, process, date range, data categories... (never message content).
    Column("details", Text, nullable=False, server_default="{}"),
    Column("decision", Text, nullable=False, server_default="{}"),
)
Index("ix_cases_region_status", cases.c.region, cases.c.status)

case_messages = Table(
    "case_messages",
    metadata,
    Column("case_id", ForeignKey("cases.id"), primary_key=True),
    Column("message_id", BigInteger, primary_key=True),
)

case_targets = Table(
    "case_targets",
    metadata,
    Column("case_id", ForeignKey("cases.id"), primary_key=True),
    Column("user_id", ForeignKey("users.id"), primary_key=True, index=True),
)

legal_documents = Table(
    "legal_documents",
    metadata,
    Column("case_id", ForeignKey("cases.id"), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("wrapped_dek", LargeBinary, nullable=False),
    Column("sealed_meta", LargeBinary, nullable=False),
)

holds = Table(
    "holds",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("case_id", ForeignKey("cases.id"), nullable=False),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    Column("starts_ms", BigInteger, nullable=False),
    Column("ends_ms", BigInteger, nullable=False),
    Column("extended", Boolean, nullable=False, server_default="0"),
    Column("released_ms", BigInteger, nullable=True),
)

# The access log: an append-only Merkle tree (RFC 9162 hashing). `entry` is the exact leaf
# input; every fact about an entry lives inside those bytes, so changing any stored byte
# changes a leaf hash and breaks the signed tree heads.
access_log = Table(
    "access_log",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
)

# Per-member parts of an entry ("redacted leaves"): the entry holds only a salted hash of each
# block, so a member can be shown their own block and verify inclusion without seeing others'.
access_log_subjects = Table(
    "access_log_subjects",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("block", LargeBinary, nullable=False),
    Column("visible_from_ms", BigInteger, nullable=False),
    Column("notified_ms", BigInteger, nullable=True),
)

tree_heads = Table(
    "tree_heads",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# End-to-end encryption: what devices publish so that others can encrypt to them, in the Matrix
# JSON shapes, kept exactly as signed (`key_json`). Public keys only: the service holds no
# private key. A device's rows go with the device (ON DELETE CASCADE).
_DEVICE_FK = (("user_id", "device_id"), ("devices.user_id", "devices.device_id"))

e2ee_device_keys = Table(
    "e2ee_device_keys",
    metadata,
    Column("user_id", SequenceId, primary_key=True),
    Column("device_id", String(64), primary_key=True),
    # The identity keys, unpadded base64: fixed for the device's life once published.
    Column("ed25519", String(64), nullable=False),
    Column("curve25519", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # The key-transparency log entry that published this key_json.
    Column("log_idx", BigInteger, nullable=True),
    ForeignKeyConstraint(*_DEVICE_FK, ondelete="CASCADE"),
)

# Each is handed out once (a claim deletes it).
e2ee_one_time_keys = Table(
    "e2ee_one_time_keys",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("user_id", SequenceId, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("algorithm", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    ForeignKeyConstraint(*_DEVICE_FK, ondelete="CASCADE"),
    UniqueConstraint("user_id", "device_id", "algorithm", "key_id", name="uq_e2ee_one_time_keys"),
)

# One per device and algorithm, handed out (and kept) once the one-time keys run out.
e2ee_fallback_keys = Table(
    "e2ee_fallback_keys",
    metadata,
    Column("user_id", SequenceId, primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("algorithm", String(64), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    Column("used", Boolean, nullable=False, server_default="0"),
    ForeignKeyConstraint(*_DEVICE_FK, ondelete="CASCADE"),
)

# A member's cross-signing keys: usage master | self_signing | user_signing.
e2ee_cross_signing_keys = Table(
    "e2ee_cross_signing_keys",
    metadata,
    Column("user_id", ForeignKey("users.id"), primary_key=True),
    Column("usage", String(16), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("key_json", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("log_idx", BigInteger, nullable=True),  # as for device keys
)

# Signatures added after publication (`keys/signatures/upload`): a device signed by its
# owner's self-signing key, a master key signed by one of its owner's devices, or another
# member's master key signed by a user-signing key (shown to its signer only). `target_key`
# is a device id or a master key's public key.
e2ee_signatures = Table(
    "e2ee_signatures",
    metadata,
    Column("target_user_id", ForeignKey("users.id"), primary_key=True),
    Column("target_key", String(64), primary_key=True),
    Column("signer_user_id", ForeignKey("users.id"), primary_key=True, index=True),
    Column("signing_key_id", String(80), primary_key=True),
    Column("signature", String(128), nullable=False),
)

# `PUT sendToDevice/{type}/{txn_id}` seen per sending device: a retry sends nothing twice.
e2ee_to_device_txns = Table(
    "e2ee_to_device_txns",
    metadata,
    Column("user_id", SequenceId, primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("txn_id", String(128), primary_key=True),
    Column("created_ms", BigInteger, nullable=False),
    ForeignKeyConstraint(*_DEVICE_FK, ondelete="CASCADE"),
)

# The key-transparency log: every publication and removal of a device's or a member's
# cross-signing keys, as leaves of a Merkle tree like the access log's, with its own signed
# tree heads (a distinct signing prefix). Entries name members and devices and commit to key
# hashes; they are shown only with the keys a member may fetch.
key_log = Table(
    "key_log",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
)

key_log_heads = Table(
    "key_log_heads",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("timestamp_ms", BigInteger, nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# Strikes against a member (a moderator's decision, or the system's own finding): each counts
# toward automatic escalation until it expires; overturning its decision on appeal deletes it.
strikes = Table(
    "strikes",
    metadata,
    Column("id", SequenceId, primary_key=True, autoincrement=True),
    Column("user_id", ForeignKey("users.id"), nullable=False, index=True),
    # The report case it came from; NULL for an automatic strike that has no case.
    Column("case_id", ForeignKey("cases.id"), nullable=True, index=True),
    Column("category", String(24), nullable=False),
    Column("source", String(10), nullable=False),  # moderator | automatic
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
)
