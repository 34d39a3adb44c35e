"""The web app's read model: highest version wins, repeats change nothing; the hub coalesces wake-ups."""

from __future__ import annotations

import asyncio
from typing import Any

from web.view import Hub, View


def _tally(version: int, used: int = 0, path: str = "p1") -> dict[str, Any]:
    return {"path_id": path, "program_id": "prog", "org_id": "org", "version": version, "used_minutes": used}


def _status(meeting: str, version: int, status: str, path: str = "p1") -> dict[str, Any]:
    return {"meeting_id": meeting, "path_id": path, "program_id": "prog", "org_id": "org", "version": version,
            "status": status, "disputed": False}  # fmt: skip


def test_the_highest_tally_version_wins_and_repeats_change_nothing() -> None:
    view = View()
    assert view.apply_tally(_tally(2, used=60)) == "p1"
    assert view.apply_tally(_tally(2, used=60)) is None  # a re-publication after a crash
    assert view.apply_tally(_tally(1, used=0)) is None  # older, arriving late
    assert view.path("p1").tally["used_minutes"] == 60  # type: ignore[union-attr,index]
    assert view.apply_tally(_tally(5, used=120)) == "p1"
    assert view.path("p1").tally["version"] == 5  # type: ignore[union-attr,index]
    assert view.counts == {"tallies": 2, "statuses": 0, "ignored": 2}


def test_statuses_are_kept_per_meeting_and_grouped_by_path_and_program() -> None:
    view = View()
    view.apply_status(_status("m1", 1, "upcoming"))
    view.apply_status(_status("m1", 3, "confirmed"))
    view.apply_status(_status("m1", 2, "unconfirmed"))  # late and older: ignored
    view.apply_status(_status("m2", 1, "upcoming", path="p2"))
    view.apply_tally(_tally(1, path="p2"))
    assert view.meeting("m1")["status"] == "confirmed"  # type: ignore[index]
    assert [pv.path_id for pv in view.paths_of_program("prog")] == ["p1", "p2"]
    assert [pv.path_id for pv in view.tallied()] == ["p2"]  # p1 has statuses but no tally yet
    assert view.meeting("unknown") is None


def test_the_hub_wakes_only_the_pages_concerned_and_coalesces_bursts() -> None:
    async def scenario() -> None:
        hub = Hub()
        p1 = hub.subscribe("pat", ["p1"])
        p2 = hub.subscribe("lee", ["p2"])
        everything = hub.subscribe("sam", everything=True)
        for _ in range(50):
            hub.changed(["p1"])
        hub.notify("pat")
        assert await p1.next(1.0) == {"path:p1", "notice"}
        assert await p2.next(0.05) == set()  # nothing for p2: times out empty
        assert await everything.next(1.0) == {"path:p1"}
        hub.unsubscribe(p1)
        hub.changed(["p1"])
        assert len(hub) == 2
        hub.close()
        assert await p2.next(1.0) == {"close"}

    asyncio.run(scenario())
