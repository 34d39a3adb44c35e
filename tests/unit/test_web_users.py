"""Users of the web app: password hashes, the users file, and who sees what (web/users.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from session_tally.commands.web import DEMO_USERS
from session_tally.demo_history import DEMO_LOGINS, PATHS
from web.users import User, Users, UsersFileError, hash_password, verify_password


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("", stored)
    assert hash_password("correct horse") != stored  # a fresh salt each time


@pytest.mark.parametrize("stored", ["", "plain", "scrypt$1$2$3", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$x$8$1$AA$AA"])
def test_a_malformed_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything", stored)


def _doc(**fields: object) -> dict[str, object]:
    entry = {"id": "u1", "role": "participant", "paths": ["p1"], "password_hash": hash_password("pw")} | fields
    return {"user": [entry]}


def test_authenticate_by_id_and_password() -> None:
    users = Users.from_document(_doc())
    user = users.authenticate("u1", "pw")
    assert user is not None and user.role == "participant" and user.paths == {"p1"}
    assert users.authenticate("u1", "wrong") is None
    assert users.authenticate("nobody", "pw") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"role": "boss"}, "role must be one of"),
        ({"id": "has space"}, "id must be"),
        ({"password_hash": "secret"}, "password_hash must be a scrypt hash"),
        ({"role": "program_admin", "paths": []}, "a program_admin needs orgs"),
        ({"paths": []}, "a participant needs paths"),
        ({"paths": ["ok", "not ok"]}, "paths must be a list of ids"),
    ],
)
def test_an_invalid_users_file_says_what_is_wrong(fields: dict[str, object], message: str) -> None:
    with pytest.raises(UsersFileError, match=message):
        Users.from_document(_doc(**fields))


def test_a_user_listed_twice_is_refused() -> None:
    doc = _doc()
    doc["user"] = [*doc["user"], *doc["user"]]  # type: ignore[misc]
    with pytest.raises(UsersFileError, match="listed twice: u1"):
        Users.from_document(doc)


def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="cannot read"):
        Users.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[user]\nid=")
    with pytest.raises(UsersFileError, match="not valid TOML"):
        Users.load(bad)


def test_who_sees_what() -> None:
    support = User("s", "S", "support", "x")
    admin = User("a", "A", "program_admin", "x", orgs=frozenset({"org-1"}))
    learner = User("l", "L", "participant", "x", paths=frozenset({"path-1"}))
    assert support.sees_path("path-9", "org-9") and support.sees_org("org-9")
    assert admin.sees_path("path-9", "org-1") and not admin.sees_path("path-9", "org-2")
    assert learner.sees_path("path-1", "org-1") and not learner.sees_path("path-2", "org-1")
    assert not learner.sees_org("org-1") and not learner.is_admin
    assert admin.is_admin and support.is_admin


def test_the_demo_users_file_matches_the_printed_passwords_and_the_demo_paths() -> None:
    users = Users.load(DEMO_USERS)
    assert {u for u, _p, _w in DEMO_LOGINS} == set(users.by_id)
    for user_id, password, _what in DEMO_LOGINS:
        assert users.authenticate(user_id, password) is not None, user_id
    members = {p for u in users.by_id.values() for p in u.paths}
    assert members <= set(PATHS)
