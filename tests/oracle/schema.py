"""The independent model of the specification, part 1: constants, parsing helpers and the schema checks
(written from SPEC.md and its worked examples only, never from domain/)."""

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

OPTIONS = {
    # authorized hours in force: program value/path override chosen by latest
    # occurred_at regardless of T (True) or only among events with occurred_at <= T
    "auth_hours_at_T": False,
    # path override vs program value: "override" = the override, when set, always wins;
    # "latest" = whichever of (latest path event, latest program authorized_hours
    # event) has the later occurred_at wins.
    "auth_override_rule": "override",
    # dispute status at t: consider the cancel even when its occurred_at > t
    "dispute_ignores_cancel_time": True,
    # schema check order for a known type with unsupported version & bad data:
    # True -> unsupported_schema_version before data schema_violation
    "version_before_data": True,
    # tenant_mismatch also when reschedule's new_meeting_id exists on another path
    "new_id_tenant_check": False,
    # whitespace-only lines are blank
    "whitespace_blank": True,
    # waiting retry order: "sorted" = always the earliest-arrived ready event
    "retry_order": "sorted",
    # optional text fields (name?, reason?, note?, comment?) given as null are treated as absent
    "optional_null_ok": True,
}

MAX_BYTES = 64 * 1024
ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TS_RE = re.compile(
    r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
DUR_W_RE = re.compile(r"^P([0-9]+)W$")
DUR_RE = re.compile(r"^P(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+)S)?)?$")

STATUSES = [
    "upcoming",
    "unconfirmed",
    "confirmed",
    "auto_confirmed",
    "did_not_occur",
    "late_canceled_pending",
    "late_canceled",
    "late_cancel_waived",
    "canceled",
    "rescheduled",
]

ROLES = {"participant", "facilitator", "program_admin", "support", "system"}

ALLOWED = {
    "organization.session_management_set": {"support"},
    "program.created": {"program_admin", "support"},
    "program.settings_updated": {"support"},
    "path.authorized_hours_set": {"program_admin", "support"},
    "meeting.scheduled": {"participant", "facilitator", "program_admin", "system"},
    "meeting.rescheduled": {"participant", "facilitator", "program_admin", "system"},
    "meeting.canceled": {"participant", "facilitator", "program_admin", "system"},
    "meeting.confirmation_submitted": {"participant", "program_admin"},
    "meeting.disputed": {"facilitator", "participant"},
    "meeting.dispute_resolved": {"program_admin", "support"},
}
ORG_TYPES = {"organization.session_management_set"}
PROGRAM_TYPES = {"program.created", "program.settings_updated"}
PATH_TYPES = {t for t in ALLOWED if t.startswith("path.") or t.startswith("meeting.")}


class Reject(Exception):
    def __init__(self, reason):
        self.reason = reason


class Wait(Exception):
    def __init__(self, kind, key):
        self.kind = kind  # "program" | "meeting"
        self.key = key


class Skip(Exception):
    pass


# ---------------------------------------------------------------- parsing helpers


def parse_ts(s):
    """RFC 3339 with offset -> aware datetime, or None if invalid."""
    if not isinstance(s, str):
        return None
    m = TS_RE.fullmatch(s)
    if not m:
        return None
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    frac = m.group(7)
    off = m.group(8)
    try:
        us = 0
        if frac:
            digits = frac[1:]
            us = int((digits + "000000")[:6])
        if off in ("Z", "z"):
            tz = UTC
        else:
            sign = 1 if off[0] == "+" else -1
            oh, om = int(off[1:3]), int(off[4:6])
            if oh > 23 or om > 59:
                return None
            tz = timezone(sign * timedelta(hours=oh, minutes=om))
        return datetime(y, mo, d, h, mi, se, us, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_duration(s):
    """ISO-8601 subset -> timedelta or None."""
    if not isinstance(s, str):
        return None
    m = DUR_W_RE.fullmatch(s)
    if m:
        return timedelta(weeks=int(m.group(1)))
    m = DUR_RE.fullmatch(s)
    if not m or s == "P" or s.endswith("T"):
        return None
    d, h, mi, se = m.groups()
    if d is None and h is None and mi is None and se is None:
        return None
    return timedelta(days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0), seconds=int(se or 0))


def is_bool(v):
    return isinstance(v, bool)


def is_str(v):
    return isinstance(v, str)


def is_number(v):
    return isinstance(v, (int, Decimal)) and not isinstance(v, bool)


def valid_hours(v):
    """number >= 0, at most 2 decimals, <= 100000 (null handled by caller)."""
    if not is_number(v):
        return False
    d = Decimal(v)
    if not d.is_finite():
        return False
    if d < 0 or d > 100000:
        return False
    # at most 2 decimals: numeric value must be a multiple of 0.01
    return (d * 100) == (d * 100).to_integral_value()


def valid_id(v):
    return isinstance(v, str) and ID_RE.fullmatch(v) is not None


def fmt_ts(dt):
    s = dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        s += ".%06d" % dt.microsecond
        s = s.rstrip("0")
    return s + "Z"


def round2(fr):
    """Fraction -> Decimal rounded to 2 decimals, ties away from zero."""
    d = Decimal(fr.numerator) / Decimal(fr.denominator)
    # enough precision: exact for denominators dividing 60*100
    return d.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def num_out(d):
    """Decimal -> JSON-friendly number (int when integral)."""
    if d is None:
        return None
    d = Decimal(d)
    if d == d.to_integral_value():
        return int(d)
    return float(d)


# ---------------------------------------------------------------- schema


def has_nul(v):
    """U+0000 in any string or object key (SPEC 3)."""
    if isinstance(v, str):
        return "\0" in v
    if isinstance(v, dict):
        return any(has_nul(k) or has_nul(x) for k, x in v.items())
    if isinstance(v, list):
        return any(has_nul(x) for x in v)
    return False


def check_schema(ev):
    """Raise Reject for schema_violation / unknown_type / unsupported_schema_version."""
    if not isinstance(ev, dict):
        raise Reject("schema_violation")
    if has_nul(ev):  # SPEC 3: checked before every other schema rule
        raise Reject("schema_violation")
    # envelope
    if not valid_id(ev.get("event_id")):
        raise Reject("schema_violation")
    typ = ev.get("type")
    if not is_str(typ):
        raise Reject("schema_violation")
    sv = ev.get("schema_version", None)
    if "schema_version" not in ev:
        raise Reject("schema_violation")
    if not (isinstance(sv, int) and not isinstance(sv, bool)):
        raise Reject("schema_violation")
    if parse_ts(ev.get("occurred_at")) is None:
        raise Reject("schema_violation")
    if not valid_id(ev.get("org_id")):
        raise Reject("schema_violation")
    actor = ev.get("actor")
    if (
        not isinstance(actor, dict)
        or not valid_id(actor.get("id"))
        or actor.get("role") not in ROLES
        or not is_str(actor.get("role"))
    ):
        raise Reject("schema_violation")
    if not isinstance(ev.get("data"), dict):
        raise Reject("schema_violation")
    if typ not in ALLOWED:
        raise Reject("unknown_type")
    if OPTIONS["version_before_data"] and sv != 1:
        raise Reject("unsupported_schema_version")
    # per type envelope ids
    if typ in ORG_TYPES:
        if "path_id" in ev:
            raise Reject("schema_violation")
    elif typ in PROGRAM_TYPES:
        if "path_id" in ev:
            raise Reject("schema_violation")
        if not valid_id(ev.get("program_id")):
            raise Reject("schema_violation")
    else:
        if not valid_id(ev.get("program_id")) or not valid_id(ev.get("path_id")):
            raise Reject("schema_violation")
    check_data(typ, ev["data"])
    if sv != 1:
        raise Reject("unsupported_schema_version")


def opt_text(data, key, maxlen=None):
    if key in data:
        v = data[key]
        if v is None and OPTIONS["optional_null_ok"]:
            return
        if not is_str(v):
            raise Reject("schema_violation")
        if maxlen is not None and len(v) > maxlen:
            raise Reject("schema_violation")


def check_meeting_times(s, e):
    st, en = parse_ts(s), parse_ts(e)
    if st is None or en is None:
        raise Reject("schema_violation")
    if not st < en:
        raise Reject("schema_violation")
    if en - st > timedelta(hours=24):
        raise Reject("schema_violation")


def check_lcw(v):
    if v is None:
        return
    d = parse_duration(v)
    if d is None or d < timedelta(hours=1) or d > timedelta(days=30):
        raise Reject("schema_violation")


def check_acw(v):
    d = parse_duration(v)
    if d is None or d < timedelta(hours=1) or d > timedelta(days=90):
        raise Reject("schema_violation")


def check_hours_field(v):
    if v is None:
        return
    if not valid_hours(v):
        raise Reject("schema_violation")


def check_data(typ, data):
    def need(k):
        if k not in data:
            raise Reject("schema_violation")
        return data[k]

    if typ == "organization.session_management_set":
        if not is_bool(need("enabled")):
            raise Reject("schema_violation")
    elif typ == "program.created":
        opt_text(data, "name")
        ver = need("session_verification")
        if not is_bool(ver):
            raise Reject("schema_violation")
        check_lcw(need("late_cancel_window"))
        check_hours_field(need("authorized_hours"))
        if ver:
            check_acw(need("auto_confirm_window"))
        elif data.get("auto_confirm_window") is not None:
            # OPT: not required when verification is off; null accepted then
            check_acw(data["auto_confirm_window"])
    elif typ == "program.settings_updated":
        keys = [k for k in ("late_cancel_window", "auto_confirm_window", "authorized_hours") if k in data]
        if not keys:
            raise Reject("schema_violation")
        if "late_cancel_window" in data:
            check_lcw(data["late_cancel_window"])
        if "auto_confirm_window" in data:
            check_acw(data["auto_confirm_window"])
        if "authorized_hours" in data:
            check_hours_field(data["authorized_hours"])
    elif typ == "path.authorized_hours_set":
        check_hours_field(need("authorized_hours"))
        opt_text(data, "note", 2000)
    elif typ == "meeting.scheduled":
        if not valid_id(need("meeting_id")):
            raise Reject("schema_violation")
        check_meeting_times(need("start"), need("end"))
    elif typ == "meeting.rescheduled":
        if not valid_id(need("meeting_id")) or not valid_id(need("new_meeting_id")):
            raise Reject("schema_violation")
        check_meeting_times(need("new_start"), need("new_end"))
    elif typ == "meeting.canceled":
        if not valid_id(need("meeting_id")):
            raise Reject("schema_violation")
        opt_text(data, "reason")
    elif typ == "meeting.confirmation_submitted":
        if not valid_id(need("meeting_id")):
            raise Reject("schema_violation")
        if not is_bool(need("occurred")):
            raise Reject("schema_violation")
    elif typ == "meeting.disputed":
        if not valid_id(need("meeting_id")):
            raise Reject("schema_violation")
        opt_text(data, "comment", 2000)
    elif typ == "meeting.dispute_resolved":
        if not valid_id(need("meeting_id")):
            raise Reject("schema_violation")
        if need("outcome") not in ("upheld", "rejected") or not is_str(data["outcome"]):
            raise Reject("schema_violation")
        opt_text(data, "note", 2000)
