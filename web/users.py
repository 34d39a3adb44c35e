"""Users of the web app: who they are, their role, what they belong to, and how they sign in.

The users file is TOML (``[[user]]`` tables, see docs/web.md). Passwords are stored only as scrypt
hashes (``scrypt$N$r$p$salt$hash``, base64 without padding); verification takes constant time in the
hash and also runs for unknown user names, so that a failed sign-in does not tell which part was wrong.

Membership is the one rule of who sees what, kept here:

- ``support`` sees every organization, program and path;
- ``program_admin`` sees the programs (and their paths) of the organizations listed in ``orgs``;
- ``facilitator`` and ``participant`` see the paths listed in ``paths`` and the programs of those paths.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("participant", "facilitator", "program_admin", "support")
ADMIN_ROLES = frozenset({"program_admin", "support"})
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# scrypt cost: about 50 ms and 16 MiB per hash on this class of machine
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class UsersFileError(ValueError):
    """The users file cannot be read or is not valid; the message says where."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The storable hash of a password (a fresh random salt unless one is given)."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match the stored hash? False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(want), maxmem=2**26
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


@dataclass(frozen=True, slots=True)
class User:
    id: str  # the sign-in name, also ``actor.id`` of every event the user publishes
    name: str
    role: str
    password_hash: str
    orgs: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        """Program admin or support desk: may read admin-only text (of what it may see)."""
        return self.role in ADMIN_ROLES

    def sees_org(self, org_id: str) -> bool:
        return self.role == "support" or (self.role == "program_admin" and org_id in self.orgs)

    def sees_path(self, path_id: str, org_id: str) -> bool:
        """May this user see the path ``path_id`` of organization ``org_id``?"""
        return self.sees_org(org_id) or path_id in self.paths


class Users:
    """The users of one users file, by id."""

    def __init__(self, users: list[User]) -> None:
        self.by_id = {u.id: u for u in users}

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, user_id: str) -> User | None:
        return self.by_id.get(user_id)

    def authenticate(self, user_id: str, password: str) -> User | None:
        """The user when the password matches, else None (same work for an unknown name)."""
        user = self.by_id.get(user_id)
        ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
        return user if ok and user is not None else None

    @classmethod
    def load(cls, path: str | Path) -> Users:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise UsersFileError(f"cannot read the users file {path}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsersFileError(f"the users file {path} is not valid TOML: {exc}") from exc
        return cls.from_document(doc, str(path))

    @classmethod
    def from_document(cls, doc: dict[str, Any], where: str = "users file") -> Users:
        entries = doc.get("user")
        if not isinstance(entries, list) or not entries:
            raise UsersFileError(f"{where}: no [[user]] entries")
        users: list[User] = []
        for number, entry in enumerate(entries, start=1):
            users.append(_user(entry, f"{where}: user #{number}"))
        ids = [u.id for u in users]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise UsersFileError(f"{where}: user id(s) listed twice: {', '.join(duplicates)}")
        return cls(users)


def _ids(entry: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and _ID.match(v) for v in value):
        raise UsersFileError(f"{where}: {key} must be a list of ids")
    return frozenset(value)


def _user(entry: Any, where: str) -> User:
    if not isinstance(entry, dict):
        raise UsersFileError(f"{where}: not a table")
    user_id, role, password = entry.get("id"), entry.get("role"), entry.get("password_hash")
    if not isinstance(user_id, str) or not _ID.match(user_id):
        raise UsersFileError(f"{where}: id must be 1-128 characters [A-Za-z0-9._:-]")
    where = f"{where} ({user_id})"
    if role not in ROLES:
        raise UsersFileError(f"{where}: role must be one of {', '.join(ROLES)}")
    if not isinstance(password, str) or not password.startswith("scrypt$"):
        raise UsersFileError(f"{where}: password_hash must be a scrypt hash (session-tally web --hash-password)")
    name = entry.get("name", user_id)
    if not isinstance(name, str):
        raise UsersFileError(f"{where}: name must be a string")
    orgs, paths = _ids(entry, "orgs", where), _ids(entry, "paths", where)
    if role == "program_admin" and not orgs:
        raise UsersFileError(f"{where}: a program_admin needs orgs = [...]")
    if role in ("participant", "facilitator") and not paths:
        raise UsersFileError(f"{where}: a {role} needs paths = [...]")
    return User(id=user_id, name=name, role=role, password_hash=password, orgs=orgs, paths=paths)
