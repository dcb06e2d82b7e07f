"""Every string a client can submit is one of the text types of `api.schemas`.

Checked over the validators themselves (pydantic's core schemas), once, for every request
body, path, query and header parameter of every route and for every WebSocket frame: each
string node carries a pattern, and that pattern refuses every C0 and C1 control character and
DEL (newline and tab are allowed in `MultilineText` only). A field typed plain `str` fails here,
not in production. (The behaviour at the edge is tried by tests/hostile/test_control_chars.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app_routes import app_routes
from keyhold.api.schemas import MULTILINE
from keyhold.api.stream import CLIENT_FRAMES, AuthFrame

CONTROLS = [chr(c) for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]


def _validators(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for _prefix, route in app_routes(tmp_path / "home"):
        dependant = getattr(route, "dependant", None)
        if dependant is None:
            continue
        params = dependant.path_params + dependant.query_params + dependant.header_params + dependant.body_params
        for param in params:
            yield f"{route.path} {param.name}", param._type_adapter.core_schema
    yield "stream frames", CLIENT_FRAMES.core_schema
    yield "stream auth frame", AuthFrame.__pydantic_core_schema__


def _nodes(node: Any, where: str, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of type `kind` ("str", "int") in a core schema, with where it is."""
    if isinstance(node, dict):
        if node.get("type") == kind:
            yield where, node
        for key, value in node.items():
            yield from _nodes(value, f"{where}/{key}", kind)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, f"{where}[{i}]", kind)


def _string_nodes(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    return _nodes(node, where, "str")


def test_every_submitted_string_refuses_control_characters(tmp_path: Path) -> None:
    checked = 0
    for name, schema in _validators(tmp_path):
        for where, node in _string_nodes(schema, name):
            pattern = node.get("pattern")
            assert pattern is not None, f"{where}: a plain str; use Text or MultilineText"
            allowed = {"\n", "\t"} if pattern == MULTILINE else set()
            let_through = [c for c in CONTROLS if c not in allowed and re.search(pattern, f"a{c}b")]
            assert not let_through, f"{where}: pattern {pattern!r} lets {let_through!r} through"
            checked += 1
    # Bodies, parameters and frames: far more than a handful (a broken walk would find none).
    assert checked >= 60, checked


def test_the_walk_finds_a_plain_string() -> None:
    """The check above can fail: a model with a plain `str` shows up as a pattern-less node."""
    from pydantic import BaseModel

    class Careless(BaseModel):
        name: str

    nodes = list(_string_nodes(Careless.__pydantic_core_schema__, "Careless"))
    assert len(nodes) == 1 and nodes[0][1].get("pattern") is None


# Integers the domain bounds itself, with its own message: the edge takes any integer there.
# Integers the domain bounds itself, with its own message: the edge takes any integer there.
# (validator, field)
BOUNDED_IN_THE_DOMAIN = {("/conversations/{conversation_id}/timer body", "seconds")}  # MIN/MAX_TIMER_S
INT64 = (-(2**63), 2**63 - 1)


def test_every_submitted_integer_is_bounded(tmp_path: Path) -> None:
    """An integer beyond 64 bits would reach the database as an error (PostgreSQL's BIGINT), a
    5xx: every integer of every body, parameter and frame has bounds at the edge, within 64
    bits, or is the one field named in BOUNDED_IN_THE_DOMAIN."""
    checked, unbounded = 0, set()
    for name, schema in _validators(tmp_path):
        for where, node in _nodes(schema, name, "int"):
            checked += 1
            low, high = node.get("ge", node.get("gt")), node.get("le", node.get("lt"))
            if low is None or high is None or low < INT64[0] or high > INT64[1]:
                field = where.rsplit("/fields/", 1)[-1].split("/", 1)[0] if "/fields/" in where else ""
                unbounded.add((name, field))
    assert unbounded == BOUNDED_IN_THE_DOMAIN, unbounded
    assert checked >= 20, checked


@pytest.mark.parametrize("control", ["\x00", "\x1b", "\x7f", "\x85", "\u009f"])
def test_a_frame_with_a_control_character_is_refused(control: str) -> None:
    """The patterns are what pydantic's core runs: the frame adapter refuses the value."""
    from pydantic import ValidationError

    frame = {"type": "send", "conversation_id": 1, "text": "ok", "idempotency_key": f"k{control}"}
    with pytest.raises(ValidationError):
        CLIENT_FRAMES.validate_python(frame)
