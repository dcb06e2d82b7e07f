"""The layers point one way (DESIGN.md, docs/architecture.md): every `keyhold` import under
`src/` — top-level, deferred inside a function, or for type checking only — is read from the
syntax tree and checked against the arrows below. An arrow against them fails with the file,
the line and the import.

    cli ──► clients ──► sdk ──► crypto (pure verification only)
    cli ──► app ──► api ──► governance ──► core ──► crypto, store, bus
                     │  └──► safety, e2ee ──┘
                     └──────────────────────► core
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "keyhold"

BASE = {"clock", "config"}  # leaf modules with no keyhold imports: time and settings
SERVER = {"core", "crypto", "store", "bus"} | BASE
ALLOWED: dict[str, set[str]] = {
    "clock": set(),
    "config": set(),
    "crypto": {"crypto"},
    "store": {"store"} | BASE,
    "bus": {"bus"},
    "core": SERVER,
    "safety": {"safety"} | SERVER,
    "e2ee": {"e2ee"} | SERVER,
    "governance": {"governance"} | SERVER,
    # The API parses and answers; it reaches storage, keys and fan-out only through services.
    "api": {"api", "governance", "safety", "e2ee", "core"} | BASE,
    "app": {"app", "api", "governance", "safety", "e2ee"} | SERVER,
    "sdk": {"sdk", "crypto"},
    "clients": {"clients", "sdk"},
    "bench": {"bench", "sdk", "app", "core", "governance", "safety"} | BASE,
    # The operator's commands reach the domain packages as `app` does (audit verify reads the
    # access log and the key-transparency log).
    "cli": {"cli", "clients", "bench", "app", "core", "governance", "e2ee", "safety", "crypto"} | BASE,
    "__main__": {"cli"},
    "__init__": set(),
}
# The SDK may use only the parts of `crypto` whose keys the client holds (Merkle proofs, Matrix's
# signed JSON, sealing its own files under a passphrase), never the server's key handling.
SDK_CRYPTO = {
    "keyhold.crypto.merkle",
    "keyhold.crypto.signed_json",
    "keyhold.crypto.passphrase_box",
    "keyhold.crypto.franking",
    "keyhold.crypto.encrypted_file",
}


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing module's layer
    target: str  # the imported module, dotted
    where: str  # file:line

    @property
    def layer(self) -> str:
        parts = self.target.split(".")
        return parts[1] if len(parts) > 1 else "__init__"


def layer_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def arrows(path: Path, root: Path = SRC) -> list[Arrow]:
    found = []
    source = layer_of(path, root)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}:{node.lineno}: relative import; write it absolute")
        elif isinstance(node, ast.ImportFrom) and node.module == "keyhold":
            # `from keyhold import x`: x is a module of the package, or a name from __init__
            names = [f"keyhold.{a.name}" if (root / f"{a.name}.py").exists() or (root / a.name).is_dir() else "keyhold" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "keyhold":
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "keyhold"]
        where = f"{path.name if root != SRC else path.relative_to(SRC.parent.parent)}:{getattr(node, 'lineno', 0)}"
        found += [Arrow(source, name, where) for name in names]
    return found


def against_the_layers(found: list[Arrow], layer: str) -> list[str]:
    return [
        f"{a.where}: {layer} imports {a.target}"
        for a in found
        if a.source == layer and a.layer not in (layer, "__init__") and a.layer not in ALLOWED[layer]
    ]


ALL = [arrow for path in sorted(SRC.rglob("*.py")) for arrow in arrows(path)]


def test_the_scan_sees_the_code() -> None:
    """A guard against a scan that silently finds nothing."""
    assert len(ALL) > 200
    assert {a.source for a in ALL} >= {"api", "core", "governance", "store", "sdk", "cli", "app"}
    unknown = {layer_of(path, SRC) for path in SRC.rglob("*.py")} - set(ALLOWED)
    assert not unknown, f"layers the test does not know: {unknown}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_arrow_points_the_wrong_way(layer: str) -> None:
    wrong = against_the_layers(ALL, layer)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_sdk_uses_only_pure_crypto() -> None:
    wrong = [f"{a.where}: {a.target}" for a in ALL if a.source == "sdk" and a.layer == "crypto" and a.target not in SDK_CRYPTO]
    assert not wrong, "the SDK imports key-handling crypto:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("layer", "planted"),
    [
        ("core", "from keyhold.governance.service import Governance\n"),
        ("governance", "def f():\n    from keyhold.api import app\n"),
        ("api", "import keyhold.store.accounts\n"),
        ("sdk", "from keyhold.core import errors\n"),
        ("clients", "from keyhold.cli.main import app\n"),
        ("store", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from keyhold.core.accounts import Member\n"),
    ],
)
def test_the_scan_catches_a_planted_arrow(tmp_path: Path, layer: str, planted: str) -> None:
    """The scan itself is tested: a module of `layer` holding `planted` is caught."""
    root = tmp_path / "keyhold"
    module = root / layer / "planted.py"
    module.parent.mkdir(parents=True)
    module.write_text(planted)
    assert against_the_layers(arrows(module, root), layer)


def _loaded_after(module: str, picked: str) -> list[str]:
    """The modules a fresh interpreter holds after importing `module`, among those the Python
    expression `picked` (over a module name `m`) selects."""
    probe = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if {picked})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return loaded.stdout.split()


def test_the_command_line_starts_without_the_server() -> None:
    """Client commands (`keyhold chat`, `keyhold staff …`) and `--help` load neither the web
    framework nor the database layer nor the services: they start in a fraction of the time.
    Server commands import what they need inside their functions."""
    server_side = "m.split('.')[0] in ('fastapi', 'sqlalchemy', 'alembic', 'uvicorn') or m in ('keyhold.app', 'keyhold.api.app')"
    assert _loaded_after("keyhold.cli.main", server_side) == []


def test_the_services_start_without_the_web_framework() -> None:
    """Commands on a data dir (`keyhold user`, `staff add`, `keys`, `demo seed`, …) build the
    services (`keyhold.app`) and never serve HTTP: FastAPI and the routes load only when
    `asgi_app` is called for `keyhold serve` (about half a second of every such command)."""
    web = "m.split('.')[0] in ('fastapi', 'uvicorn') or m.startswith('keyhold.api.')"
    assert _loaded_after("keyhold.app", web) == []
