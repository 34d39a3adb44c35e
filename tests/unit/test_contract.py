"""The published contract (docs/contract/): no drift from the code, valid JSON Schema 2020-12 and AsyncAPI
3.0 files, schemas that agree with the engine on real inputs, and real outputs that match their schemas."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from domain import events as E
from domain.replay import replay
from domain.timefmt import DURATION_PATTERN, INSTANT_PATTERN, format_duration, parse_instant
from session_tally.config import Topics
from session_tally.contract import differences, generated_files, write
from session_tally.contract.examples import example_jsonl
from session_tally.topics import wanted_topics
from tests.contract_schemas import CONTRACT, REPO, SCHEMAS, assert_valid, errors, load_json, schema
from tests.unit.events_world import event

SCENARIOS = REPO / "tests" / "scenarios"
ASYNCAPI_SCHEMA = REPO / "tests" / "data" / "asyncapi" / "3.0.0.schema.json"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------- drift


def test_checked_in_contract_is_what_the_code_generates() -> None:
    done = _cli("contract", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


def test_check_reports_every_kind_of_drift(tmp_path: Path) -> None:
    write(tmp_path)
    assert differences(tmp_path) == []
    (tmp_path / "schemas/events/meeting.scheduled.json").write_text("{}\n")
    (tmp_path / "schemas/outputs/rejected.json").unlink()
    (tmp_path / "schemas/events/meeting.renamed.json").write_text("{}\n")
    done = _cli("contract", "check", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert "differs: schemas/events/meeting.scheduled.json" in done.stdout
    assert "missing: schemas/outputs/rejected.json" in done.stdout
    assert "stale (no longer generated): schemas/events/meeting.renamed.json" in done.stdout
    assert "run `session-tally contract generate`" in done.stderr
    regenerated = _cli("contract", "generate", "--out", str(tmp_path))
    assert regenerated.returncode == 0, regenerated.stderr
    assert differences(tmp_path) == []


def test_generation_is_deterministic() -> None:
    assert generated_files() == generated_files()


# ------------------------------------------------------------------------------------ the files validate


def _schema_files() -> list[Path]:
    return sorted(SCHEMAS.rglob("*.json"))


def test_one_schema_per_event_type_and_output() -> None:
    names = {p.relative_to(SCHEMAS).as_posix() for p in _schema_files()}
    assert names == {
        "envelope.json",
        "replay-document.json",
        "outputs/path-tally.json",
        "outputs/meeting-status.json",
        "outputs/rejected.json",
        *(f"events/{t}.json" for t in E.EVENT_MODELS),
    }


@pytest.mark.parametrize("path", _schema_files(), ids=lambda p: p.relative_to(SCHEMAS).as_posix())
def test_every_schema_is_valid_json_schema_2020_12(path: Path) -> None:
    doc = json.loads(path.read_bytes())
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(doc)


def _asyncapi() -> dict[str, Any]:
    return json.loads((CONTRACT / "asyncapi.json").read_bytes())  # type: ignore[no-any-return]


def test_asyncapi_document_is_valid_against_the_asyncapi_3_schema() -> None:
    # the official JSON Schema of AsyncAPI 3.0.0 (npm @asyncapi/specs 6.11.1, schemas/3.0.0-without-$id.json)
    meta = json.loads(ASYNCAPI_SCHEMA.read_bytes())
    problems = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in Draft7Validator(meta).iter_errors(_asyncapi())]
    assert problems == []


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_asyncapi_references_resolve_and_channels_follow_the_topic_settings() -> None:
    doc = _asyncapi()
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(doc)
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            _resolve(doc, ref)  # KeyError when dangling
        else:
            assert (CONTRACT / ref).is_file(), ref
    specs = {s.name: s for s in wanted_topics(Topics())}
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == set(specs)
    for channel in doc["channels"].values():
        kafka = channel["bindings"]["kafka"]
        assert kafka["partitions"] == specs[channel["address"]].partitions
        assert kafka["topicConfiguration"]["cleanup.policy"] == [specs[channel["address"]].cleanup_policy]
    admin = doc["channels"]["adminEvents"]
    path = doc["channels"]["pathEvents"]
    assert {_resolve(doc, m["$ref"])["name"] for m in admin["messages"].values()} == set(E.ADMIN_TYPES)
    assert {_resolve(doc, m["$ref"])["name"] for m in path["messages"].values()} == set(E.EVENT_MODELS) - set(
        E.ADMIN_TYPES
    )
    assert admin["x-session-tally-key"] == "org_id" and path["x-session-tally-key"] == "path_id"
    assert "murmur2_random" in path["x-session-tally-partitioner"]


def test_asyncapi_examples_match_their_payload_schemas() -> None:
    doc = _asyncapi()
    checked = 0
    for message in doc["components"]["messages"].values():
        target = message["payload"]["schema"]["$ref"].removeprefix("schemas/")
        for example in message["examples"]:
            assert_valid(target, load_json(json.dumps(example["payload"])), closed=True)
            checked += 1
    assert checked == len(E.EVENT_MODELS) + 3


# --------------------------------------------------------------------- schemas and engine agree on inputs


def _verdict(raw: bytes) -> str | None:
    """The engine's schema verdict for one line: None when it is a valid event."""
    parsed = E.parse(raw)
    if isinstance(parsed, E.Invalid):
        return parsed.reason
    result = E.validate(parsed)
    return result.reason if isinstance(result, E.Invalid) else None


def _scenario_lines() -> list[tuple[str, bytes]]:
    out = []
    for folder in sorted(SCENARIOS.iterdir()):
        if (folder / "events.jsonl").is_file():
            for n, raw in enumerate((folder / "events.jsonl").read_bytes().split(b"\n"), start=1):
                if raw.strip():
                    out.append((f"{folder.name}:{n}", raw))
    return out


def test_every_event_the_engine_accepts_matches_its_schemas() -> None:
    accepted = 0
    for where, raw in [*_scenario_lines(), *((f"example:{i}", r) for i, r in enumerate(example_jsonl().split()))]:
        if _verdict(raw) is not None:
            continue
        obj = load_json(raw)
        assert errors(f"events/{obj['type']}.json", obj) == [], where
        assert errors("envelope.json", obj) == [], where
        accepted += 1
    assert accepted > 200


# what JSON Schema cannot express; each is said in the schema's description instead
INEXPRESSIBLE = ("start must be before end", "at most 24 h", "instant outside years", "offset out of range")


def test_schema_violations_of_the_scenarios_are_refused_by_the_schemas_or_described() -> None:
    refused = described = 0
    for where, raw in _scenario_lines():
        parsed = E.parse(raw)
        if isinstance(parsed, E.Invalid) or _verdict(raw) != "schema_violation":
            continue
        model = E.EVENT_MODELS.get(parsed.get("type"))  # type: ignore[arg-type]
        if model is None or parsed.get("schema_version") != 1:
            continue
        if errors(f"events/{parsed['type']}.json", load_json(raw)):
            refused += 1
        else:
            detail = E.validate(parsed).detail  # type: ignore[union-attr]
            assert any(text in detail for text in INEXPRESSIBLE), f"{where}: schema accepts it: {detail}"
            described += 1
    assert refused > 0


@pytest.mark.parametrize("event_type", list(E.EVENT_MODELS))
def test_a_valid_event_of_each_type_matches_and_nul_anywhere_does_not(event_type: str) -> None:
    name = f"events/{event_type}.json"
    good = event(event_type)
    assert _verdict(json.dumps(good).encode()) is None
    assert errors(name, good) == []
    for bad in (
        {**good, "comment\u0000": "x"},  # in a key of an unknown field
        {**good, "extra": {"deep": ["a\u0000b"]}},  # in a nested unknown value
        {**good, "actor": {**good["actor"], "id": "u\u00001"}},
    ):
        assert errors(name, bad), bad
    assert errors(name, {**good, "unknown_field": {"any": [1, "thing"]}}) == []  # unknown fields are ignored
    assert errors(name, {**good, "schema_version": 2})
    assert errors(name, {k: v for k, v in good.items() if k != "data"})


@pytest.mark.parametrize("event_type", sorted(E.ADMIN_TYPES))
def test_path_id_is_forbidden_on_admin_events(event_type: str) -> None:
    bad = event(event_type, path_id=None)
    assert _verdict(json.dumps(bad).encode()) == "schema_violation"
    assert errors(f"events/{event_type}.json", bad)


def test_cross_field_rules_that_json_schema_can_express() -> None:
    created = "events/program.created.json"
    no_window = event(E.PROGRAM_CREATED, data={"auto_confirm_window": None})
    assert _verdict(json.dumps(no_window).encode()) == "schema_violation"
    assert errors(created, no_window)
    off = event(E.PROGRAM_CREATED, data={"auto_confirm_window": None, "session_verification": False})
    assert _verdict(json.dumps(off).encode()) is None and errors(created, off) == []
    updated = "events/program.settings_updated.json"
    empty = event(E.SETTINGS_UPDATED)
    empty["data"] = {"note": "nothing"}
    assert _verdict(json.dumps(empty).encode()) == "schema_violation" and errors(updated, empty)
    null_window = event(E.SETTINGS_UPDATED, data={"auto_confirm_window": None})
    assert _verdict(json.dumps(null_window).encode()) == "schema_violation" and errors(updated, null_window)
    hours = "events/path.authorized_hours_set.json"
    for value, ok in (("12.25", True), ("12.255", False), ("100000", True), ("100000.01", False), ("-1", False)):
        doc = event(E.PATH_HOURS_SET, data={"authorized_hours": Decimal(value)})
        raw = json.dumps(copy.deepcopy(doc), default=str).replace(f'"{value}"', value).encode()
        assert (_verdict(raw) is None) is ok, value
        assert (errors(hours, load_json(raw)) == []) is ok, value


@pytest.mark.parametrize("field", ["late_cancel_window", "auto_confirm_window"])
def test_duration_bounds_in_the_schema_are_the_models_bounds(field: str) -> None:
    prop = schema("events/program.created.json")["$defs"]["ProgramCreatedData"]["properties"][field]
    wire = next(s for s in prop["anyOf"] if s.get("type") == "string")
    low, high = parse_duration_us(wire["x-minimum"]), parse_duration_us(wire["x-maximum"])
    second = 1_000_000
    for value, ok in ((low, True), (high, True), (low - second, False), (high + second, False)):
        doc = event(E.PROGRAM_CREATED, data={field: format_duration(value)})
        assert (_verdict(json.dumps(doc).encode()) is None) is ok, (field, format_duration(value))


def parse_duration_us(text: str) -> int:
    from domain.timefmt import parse_duration

    return parse_duration(text)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-03-02T15:04:05Z", True),
        ("2026-03-02t15:04:05.123456789z", True),
        ("2026-03-02T15:04:05+05:30", True),
        ("2026-03-02T15:04:05-00:00", True),
        ("2026-03-02T15:04:05", False),
        ("2026-03-02 15:04:05Z", False),
        ("2026-03-02T15:04Z", False),
        ("2026-03-02T15:04:05+0530", False),
        ("2026-03-02T23:59:60Z", False),
        ("2026-02-30T10:00:00Z", False),
        ("\uff12\uff10\uff12\uff16-03-02T15:04:05Z", False),  # fullwidth digits
    ],
)
def test_instant_pattern_and_format_agree_with_the_parser(text: str, ok: bool) -> None:
    try:
        parse_instant(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed is ok
    check = {"type": "string", "format": "date-time", "pattern": INSTANT_PATTERN}
    v = Draft202012Validator(check, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert v.is_valid(text) is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [("P2W", True), ("P3D", True), ("PT24H", True), ("PT90M", True), ("P1DT12H", True), ("P007D", True),
     ("P1M", False), ("P1Y", False), ("PT1.5H", False), ("P1W2D", False), ("P", False), ("PT", False),
     ("P1DT", False), ("p1d", False)],
)  # fmt: skip
def test_duration_pattern_agrees_with_the_parser(text: str, ok: bool) -> None:
    from domain.timefmt import parse_duration

    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert parsed is ok
    v = Draft202012Validator({"type": "string", "format": "duration", "pattern": DURATION_PATTERN})
    assert v.is_valid(text) is ok


# ------------------------------------------------------------------------------------ outputs validate


@pytest.mark.parametrize("folder", sorted(p for p in SCENARIOS.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_replay_output_of_every_scenario_matches_its_schema(folder: Path) -> None:
    lines = (folder / "events.jsonl").read_bytes().split(b"\n")
    doc = replay(lines, parse_instant((folder / "at.txt").read_text().strip()))
    assert_valid("replay-document.json", json.dumps(doc), closed=True)


def test_replay_document_schema_refuses_what_replay_never_prints() -> None:
    doc = replay(example_jsonl().split(b"\n"), parse_instant("2026-03-20T12:00:00Z"))
    assert errors("replay-document.json", json.dumps(doc), closed=True) == []
    tally = doc["tallies"][0]
    for bad in (
        {**tally, "used_hours": 1.234},
        {**tally, "as_of": "2026-03-20T12:00:00+01:00"},
        {**tally, "meetings_by_status": {"upcoming": 1}},
        {**tally, "authorized_source": "org"},
    ):
        assert errors("replay-document.json", json.dumps({**doc, "tallies": [bad]}))
    assert errors("replay-document.json", json.dumps({**doc, "surprise": 1}), closed=True)


def test_engine_outputs_of_the_examples_carry_schema_version_1() -> None:
    from session_tally.contract.examples import output_examples

    examples = output_examples()
    for name, target in (
        ("tally", "outputs/path-tally.json"),
        ("status", "outputs/meeting-status.json"),
        ("rejected", "outputs/rejected.json"),
    ):
        payload = examples[name]["payload"]
        assert payload["schema_version"] == 1
        assert_valid(target, json.dumps(payload), closed=True)
        assert errors(target, json.dumps({**payload, "schema_version": 2}))
