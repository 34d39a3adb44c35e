"""The AsyncAPI 3.0 document of session-tally's five topics, generated from the code.

Channels take their addresses, partition counts and cleanup policies from :mod:`session_tally.topics`
(the default names), their messages from the event types of :mod:`domain.events` (which topic each type
goes to) and their payloads from the generated JSON Schemas (referenced by relative path, so the document
must stay next to ``schemas/``); examples come from :mod:`session_tally.contract.examples`. Kafka keys and
headers are described with the Kafka bindings (0.5.0) and the message ``headers`` schemas; the partitioner
that publishers must use (murmur2) is stated on the input channels.
"""

from __future__ import annotations

from typing import Any

from domain import events as E
from domain import reasons as R
from producers.publisher import LINE_HEADER
from session_tally.config import Settings, Topics
from session_tally.contract.examples import example_events, output_examples
from session_tally.topics import wanted_topics
from storage.messages import REASON_HEADER

ASYNCAPI = "3.0.0"
#: the contract's version: the major number is the messages' schema_version; the minor grows when
#: optional fields are added
CONTRACT_VERSION = "1.0.0"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
BINDING = "0.5.0"
ID_PATTERN = E.ID_PATTERN
PARTITIONER = (
    "murmur2 of the key, positive (& 0x7fffffff), modulo the partition count: the Java client's default. "
    "librdkafka clients (kcat, confluent-kafka, node-rdkafka, ...) default to CRC32 and must set "
    "partitioner=murmur2_random, or one key ends on two partitions (see docs/publishers.md)."
)


def _camel(name: str) -> str:
    parts = name.replace(".", "_").split("_")
    return parts[0] + "".join(p.title() for p in parts[1:])


def _payload(path: str) -> dict[str, Any]:
    return {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": f"schemas/{path}"}}


#: Kafka keys. Inlined in the bindings: the AsyncAPI 3.0 JSON Schema takes a key that is a {"$ref"} for
#: both a Reference and a Schema, and its oneOf then fails
KEYS = {
    "org_id": {"type": "string", "pattern": ID_PATTERN, "description": "the event's org_id (UTF-8)"},
    "path_id": {"type": "string", "pattern": ID_PATTERN, "description": "the message's path_id (UTF-8)"},
    "original": {"type": "string", "description": "the rejected input's own key, unchanged (or none)"},
}


def _key(name: str) -> dict[str, Any]:
    return {"kafka": {"key": dict(KEYS[name]), "bindingVersion": BINDING}}


def _components_schemas() -> dict[str, Any]:
    return {
        "inputHeaders": {
            "type": "object",
            "description": "Optional. Other headers are ignored (and reproduced when the input is rejected).",
            "properties": {
                LINE_HEADER: {
                    "type": "string",
                    "pattern": "^[1-9][0-9]*$",
                    "description": (
                        "the 1-based line of the file the event came from, set by `session-tally publish`; "
                        "`session-tally snapshot` numbers rejections with it"
                    ),
                }
            },
        },
        "rejectedHeaders": {
            "type": "object",
            "description": "The rejected input's own headers, plus session-tally-reason.",
            "properties": {REASON_HEADER: {"type": "string", "enum": list(R.ALL), "description": "the reason"}},
            "required": [REASON_HEADER],
        },
    }


def _input_message(event_type: str, example: tuple[int, dict[str, Any]] | None) -> dict[str, Any]:
    admin = event_type in E.ADMIN_TYPES
    roles = ", ".join(sorted(E.ALLOWED_ROLES[event_type]))
    message: dict[str, Any] = {
        "name": event_type,
        "title": event_type,
        "summary": f"{event_type}, sent by {roles}; key {'org_id' if admin else 'path_id'}",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/inputHeaders"},
        "payload": _payload(f"events/{event_type}.json"),
        "bindings": _key("org_id" if admin else "path_id"),
    }
    if example is not None:
        line, payload = example
        message["examples"] = [{"name": "example", "headers": {LINE_HEADER: str(line)}, "payload": payload}]
    return message


def _output_messages() -> dict[str, dict[str, Any]]:
    examples = output_examples()

    def example(name: str) -> list[dict[str, Any]]:
        ex = examples[name]
        item: dict[str, Any] = {"name": "example", "summary": f"key {ex['key']}", "payload": ex["payload"]}
        if ex["headers"]:
            item["headers"] = ex["headers"]
        return [item]

    return {
        "pathTally": {
            "name": "path-tally",
            "title": "path tally",
            "summary": "A path's current tally (keep the highest version per path_id)",
            "contentType": "application/json",
            "payload": _payload("outputs/path-tally.json"),
            "bindings": _key("path_id"),
            "examples": example("tally"),
        },
        "meetingStatus": {
            "name": "meeting-status",
            "title": "meeting status",
            "summary": "A meeting's new status (keep the highest version per meeting_id)",
            "contentType": "application/json",
            "payload": _payload("outputs/meeting-status.json"),
            "bindings": _key("path_id"),
            "examples": example("status"),
        },
        "rejectedInput": {
            "name": "rejected",
            "title": "rejected input",
            "summary": "An input that was rejected, with its reason and the original message",
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/rejectedHeaders"},
            "payload": _payload("outputs/rejected.json"),
            "bindings": _key("original"),
            "examples": example("rejected"),
        },
    }


def asyncapi_document(topics: Topics | None = None) -> dict[str, Any]:
    """The whole AsyncAPI 3.0 document (a JSON-compatible dict, deterministic)."""
    topics = topics or Topics()
    specs = {spec.name: spec for spec in wanted_topics(topics, Settings.model_fields["input_partitions"].default)}
    examples: dict[str, tuple[int, dict[str, Any]]] = {}
    for line, doc in enumerate(example_events(), start=1):  # line numbers of examples/events.jsonl
        examples.setdefault(doc["type"], (line, doc))
    messages = {_camel(t): _input_message(t, examples.get(t)) for t in E.EVENT_MODELS}
    messages.update(_output_messages())

    def channel(cid: str, address: str, title: str, description: str, ids: list[str], key: str | None) -> Any:
        spec = specs[address]
        body: dict[str, Any] = {
            "address": address,
            "title": title,
            "description": description,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in ids},
            "bindings": {
                "kafka": {
                    "topic": address,
                    "partitions": spec.partitions,
                    "replicas": 1,
                    "topicConfiguration": {"cleanup.policy": [spec.cleanup_policy]},
                    "bindingVersion": BINDING,
                }
            },
        }
        if key is not None:
            body["x-session-tally-key"] = key
            body["x-session-tally-partitioner"] = PARTITIONER
        return cid, body

    admin_ids = [_camel(t) for t in E.EVENT_MODELS if t in E.ADMIN_TYPES]
    path_ids = [_camel(t) for t in E.EVENT_MODELS if t not in E.ADMIN_TYPES]
    channels = dict(
        [
            channel(
                "adminEvents",
                topics.admin_events,
                "admin events",
                "Organization and program events, keyed by org_id: one org's events are applied in the order "
                "they were published. An admin event must be acknowledged before a later path event that "
                "depends on it is sent.",
                admin_ids,
                "org_id",
            ),
            channel(
                "pathEvents",
                topics.path_events,
                "path events",
                "Path and meeting events, keyed by path_id: one path's events are applied in partition order.",
                path_ids,
                "path_id",
            ),
            channel(
                "pathTallies",
                topics.path_tallies,
                "path tallies",
                "The current tally of each path (compacted: the latest message per path_id is kept).",
                ["pathTally"],
                None,
            ),
            channel(
                "meetingStatuses",
                topics.meeting_statuses,
                "meeting statuses",
                "A meeting's new status each time it changes, including changes caused by the clock.",
                ["meetingStatus"],
                None,
            ),
            channel(
                "rejected",
                topics.rejected,
                "rejected inputs",
                "Every rejected input with its reason; nothing is dropped silently.",
                ["rejectedInput"],
                None,
            ),
        ]
    )

    def operation(action: str, cid: str, summary: str, group: str | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": summary,
            "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in channels[cid]["messages"]],
        }
        if group is not None:
            op["bindings"] = {"kafka": {"groupId": {"type": "string", "description": group}, "bindingVersion": BINDING}}
        return op

    group = "the worker's consumer group: SESSION_TALLY_GROUP_ID (default session-tally)"
    admin_group = "the worker's admin-topic group: SESSION_TALLY_GROUP_ID + '.admin' (default session-tally.admin)"
    return {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": "session-tally",
            "version": CONTRACT_VERSION,
            "description": (
                "Session management for coaching and mentoring programs: consumes meeting events and program "
                "settings, applies each program's policy and publishes per-path hour tallies, meeting statuses "
                "and rejected inputs. The message reference is docs/contract.md; publishers in other languages: "
                "docs/publishers.md. Topic names are the defaults (SESSION_TALLY_TOPIC_PREFIX and the "
                "SESSION_TALLY_*_TOPIC variables change them)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the broker that `session-tally services up` starts",
            }
        },
        "channels": channels,
        "operations": {
            "receiveAdminEvents": operation(
                "receive",
                "adminEvents",
                "session-tally applies admin events",
                admin_group,
            ),
            "receivePathEvents": operation("receive", "pathEvents", "session-tally applies path events", group),
            "sendPathTallies": operation("send", "pathTallies", "session-tally publishes tallies"),
            "sendMeetingStatuses": operation("send", "meetingStatuses", "session-tally publishes statuses"),
            "sendRejected": operation("send", "rejected", "session-tally publishes rejected inputs"),
        },
        "components": {"schemas": _components_schemas(), "messages": messages},
    }
