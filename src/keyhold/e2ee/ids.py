"""Matrix-style identifiers: a member is `@<username>:<server_name>`."""

from __future__ import annotations

import re

from keyhold.core.accounts import USERNAME
from keyhold.core.matrix_ids import user_id

__all__ = ["KEY_NAME", "split_user_id", "user_id"]

# `<algorithm>:<key id>`, as one-time and fallback keys are named (e.g. signed_curve25519:AAAAHQ).
KEY_NAME = re.compile(r"([a-z0-9_.]{1,48}):([A-Za-z0-9_+/=.-]{1,64})")


def split_user_id(uid: str) -> tuple[str, str] | None:
    """(username, server name) of a well-formed member id, else None."""
    if not uid.startswith("@"):
        return None
    name, sep, server = uid[1:].partition(":")
    if not sep or not USERNAME.fullmatch(name) or not server:
        return None
    return name, server
