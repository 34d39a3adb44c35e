"""Rejection reasons (SPEC section 7), in the order their checks run."""

TOO_LARGE = "too_large"
INVALID_JSON = "invalid_json"
SCHEMA_VIOLATION = "schema_violation"
UNKNOWN_TYPE = "unknown_type"
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
FORBIDDEN = "forbidden"
SESSION_MANAGEMENT_DISABLED = "session_management_disabled"
TENANT_MISMATCH = "tenant_mismatch"
PROGRAM_EXISTS = "program_exists"
MEETING_EXISTS = "meeting_exists"
UNKNOWN_PROGRAM = "unknown_program"
UNKNOWN_MEETING = "unknown_meeting"
MEETING_NOT_STARTED = "meeting_not_started"
CONFIRMATION_WINDOW_CLOSED = "confirmation_window_closed"
ALREADY_ANSWERED = "already_answered"
INVALID_TRANSITION = "invalid_transition"

ALL = (
    INVALID_JSON,
    TOO_LARGE,
    SCHEMA_VIOLATION,
    UNKNOWN_TYPE,
    UNSUPPORTED_SCHEMA_VERSION,
    FORBIDDEN,
    SESSION_MANAGEMENT_DISABLED,
    TENANT_MISMATCH,
    PROGRAM_EXISTS,
    MEETING_EXISTS,
    UNKNOWN_PROGRAM,
    UNKNOWN_MEETING,
    MEETING_NOT_STARTED,
    CONFIRMATION_WINDOW_CLOSED,
    ALREADY_ANSWERED,
    INVALID_TRANSITION,
)
