"""Static scan of src/: decryption for non-participants is reachable only through
`governance/access.py`.

Rules (paths relative to src/keyhold/):
- `.unwrap` (a KEK unwrap) only in crypto/keyprovider.py, core/keys.py, governance/access.py and
  governance/staff.py (the TOTP seed, not content);
- `.open_message` / `.open_attachment` only in core/messages.py and governance/access.py;
  `open_document` (sealed legal documents) only in governance/access.py; the envelope's private
  `_open` / `_aead` nowhere outside crypto/;
- `ConversationKey(...)` constructed only in crypto/envelope.py, core/keys.py, governance/access.py;
- no module under api/, cli/, sdk/, governance/ (other than access.py) imports
  `keyhold.crypto.envelope` for anything that can open content (the seal-only names
  `new_data_key` and `seal_document` are allowed: governance/legal.py seals documents), nor
  calls or references `key_for`;
- no module outside crypto/ imports an AEAD cipher (`cryptography.hazmat.primitives.ciphers`)
  to decrypt on its own.
Attribute *references* count, not only calls (`f = key.open_message; f(...)` is caught), and
so do `getattr(x, "open_message")` strings. The scanner checks itself on planted violations.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "keyhold"

UNWRAP_OK = {"crypto/keyprovider.py", "core/keys.py", "governance/access.py", "governance/staff.py"}
OPEN_OK = {
    "open_message": {"core/messages.py", "governance/access.py"},
    "open_attachment": {"core/messages.py", "governance/access.py"},
    "open_document": {"governance/access.py"},
}
CONVERSATION_KEY_OK = {"crypto/envelope.py", "core/keys.py", "governance/access.py"}
PRIVATE_CRYPTO = {"_open", "_aead"}
ENVELOPE = "keyhold.crypto.envelope"
ENVELOPE_SEAL_ONLY = {"new_data_key", "seal_document", "SealError", "DEK_BYTES"}
RESTRICTED_DIRS = ("api/", "cli/", "sdk/", "governance/")
ACCESS = "governance/access.py"
CIPHERS = "cryptography.hazmat.primitives.ciphers"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def _names_used(node: ast.AST) -> list[tuple[str, int]]:
    """Attribute names referenced (x.name) and getattr(x, "name") strings. A class's own private
    helpers (`self._open`) are its business; another object's `_open` is not."""
    found: list[tuple[str, int]] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            own = isinstance(sub.value, ast.Name) and sub.value.id in {"self", "cls"}
            if not (own and sub.attr in PRIVATE_CRYPTO):
                found.append((sub.attr, sub.lineno))
        elif (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Name)
            and sub.func.id in {"getattr", "hasattr"}
            and len(sub.args) >= 2
            and isinstance(sub.args[1], ast.Constant)
            and isinstance(sub.args[1].value, str)
        ):
            found.append((sub.args[1].value, sub.lineno))
    return found


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def scan_source(rel: str, source: str) -> list[Violation]:
    """Violations in one module; `rel` is its path relative to src/keyhold (e.g. api/x.py)."""
    tree = ast.parse(source, filename=rel)
    out: list[Violation] = []
    restricted = rel.startswith(RESTRICTED_DIRS) and rel != ACCESS
    in_crypto = rel.startswith("crypto/")

    for name, line in _names_used(tree):
        if name == "unwrap" and rel not in UNWRAP_OK:
            out.append(Violation(rel, line, "unwraps a key (.unwrap) outside the allowed modules"))
        elif name in OPEN_OK and rel not in OPEN_OK[name] and not (in_crypto and rel == "crypto/envelope.py"):
            out.append(Violation(rel, line, f"opens sealed content (.{name}) outside the allowed modules"))
        elif name in PRIVATE_CRYPTO and not in_crypto:
            out.append(Violation(rel, line, f"uses the envelope's private .{name}"))
        elif name == "key_for" and restricted:
            out.append(Violation(rel, line, "gets a conversation key (key_for)"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = _called_name(node)
            if called == "ConversationKey" and rel not in CONVERSATION_KEY_OK:
                out.append(Violation(rel, node.lineno, "constructs a ConversationKey"))
            if called in OPEN_OK and isinstance(node.func, ast.Name) and rel not in OPEN_OK[called]:
                out.append(Violation(rel, node.lineno, f"calls {called}()"))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == "key_for" and restricted:
                out.append(Violation(rel, node.lineno, "defines its own key_for"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if restricted and (alias.name == ENVELOPE or alias.name.startswith(ENVELOPE + ".")):
                    out.append(Violation(rel, node.lineno, f"imports {alias.name}"))
                if not in_crypto and alias.name.startswith(CIPHERS):
                    out.append(Violation(rel, node.lineno, f"imports {alias.name} (a cipher)"))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            if restricted and module == ENVELOPE:
                beyond = sorted(names - ENVELOPE_SEAL_ONLY)
                if beyond:
                    out.append(Violation(rel, node.lineno, f"imports {beyond} from {ENVELOPE}"))
            if restricted and module == "keyhold.crypto" and "envelope" in names:
                out.append(Violation(rel, node.lineno, "imports keyhold.crypto.envelope"))
            if not in_crypto and (
                module.startswith(CIPHERS)
                or (module == "cryptography.hazmat.primitives" and "ciphers" in names)
            ):
                out.append(Violation(rel, node.lineno, f"imports from {module} (a cipher)"))
            if rel not in CONVERSATION_KEY_OK and "ConversationKey" in names and restricted:
                out.append(Violation(rel, node.lineno, "imports ConversationKey"))
    return out


def scan_tree(root: Path = SRC) -> list[Violation]:
    out: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("store/migrations/"):
            continue
        out.extend(scan_source(rel, path.read_text()))
    return out


# -- the scan of src/ -----------------------------------------------------------------------------


def test_src_has_no_other_path_to_decrypt_for_non_participants() -> None:
    files = list(SRC.rglob("*.py"))
    assert len(files) > 30 and (SRC / ACCESS).exists()
    violations = scan_tree()
    assert not violations, "decryption reachable outside governance/access.py:\n" + "\n".join(
        map(str, violations)
    )


def test_the_allowed_modules_really_are_the_ones_that_decrypt() -> None:
    """The allowlists are not stale: each allowed use exists (so a rename cannot silently
    widen what the rules accept), and access.py opens content itself."""
    access = (SRC / ACCESS).read_text()
    assert ".unwrap(" in access and ".open_message(" in access and "ConversationKey(" in access
    assert ".open_message(" in (SRC / "core/messages.py").read_text()
    assert "ConversationKey(" in (SRC / "core/keys.py").read_text()
    assert ".unwrap(" in (SRC / "governance/staff.py").read_text()


# -- the scanner catches what it should (planted violations) --------------------------------------

PLANTED = {
    "api/routes_evil.py": (
        "async def peek(svc, conn, row):\n"
        "    key = await svc.keys.key_for(conn, row.conversation_id, row.epoch)\n"
        "    return key.open_message(row.id, row.sender_id, row.body)\n",
        {"key_for", ".open_message"},
    ),
    "governance/reports.py": (
        "from keyhold.crypto.envelope import ConversationKey, wrap_context\n"
        "def open_it(provider, region, wrap, row):\n"
        "    dek = provider.unwrap(region, wrap, wrap_context(row.conversation_id, row.epoch))\n"
        "    return ConversationKey(row.conversation_id, row.epoch, dek).open_message(1, 2, b'')\n",
        {
            "imports ['ConversationKey', 'wrap_context']",
            ".unwrap",
            "constructs a ConversationKey",
            ".open_message",
        },
    ),
    "cli/dump.py": ("import keyhold.crypto.envelope as env\n", {"imports keyhold.crypto.envelope"}),
    "sdk/helper.py": ("from keyhold.crypto import envelope\n", {"imports keyhold.crypto.envelope"}),
    "governance/legal.py": (
        "from keyhold.crypto.envelope import open_document\n"
        "def read_document(dek, case_id, sealed):\n"
        "    return open_document(dek, case_id, b'data', sealed)\n",
        {"imports ['open_document']", "calls open_document()"},
    ),
    "safety/scanner.py": (
        "def sneaky(key, row):\n"
        "    opener = getattr(key, 'open_message')\n"
        "    return opener(row.id, row.sender_id, row.body)\n",
        {".open_message"},
    ),
    "core/conversations.py": (
        "def direct(key, sealed, aad):\n    return key._open(sealed, aad)\n",
        {"private ._open"},
    ),
    "e2ee/directory.py": (
        "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n",
        {"a cipher"},
    ),
    "governance/transparency.py": (
        "def unwrap_alias(provider):\n    f = provider.unwrap\n    return f\n",
        {".unwrap"},
    ),
    "api/routes_keys.py": (
        "class K:\n    async def key_for(self, conn, c, e):\n        return None\n",
        {"defines its own key_for"},
    ),
}

ALLOWED = {
    "governance/access.py": (
        "from keyhold.crypto.envelope import ConversationKey, wrap_context\n"
        "def _open(provider, region, wrap, row):\n"
        "    dek = provider.unwrap(region, wrap, wrap_context(row.conversation_id, row.epoch))\n"
        "    return ConversationKey(row.conversation_id, row.epoch, dek).open_message(1, 2, b'')\n"
    ),
    "core/messages.py": "async def show(keys, conn, row):\n    key = await keys.key_for(conn, 1, 1)\n    return key.open_message(1, 2, b'')\n",
    "governance/legal.py": "from keyhold.crypto.envelope import new_data_key, seal_document\n",
    "governance/staff.py": "def totp(provider, row):\n    return provider.unwrap(row.region, row.wrapped, b'ctx')\n",
    "crypto/envelope.py": "class ConversationKey:\n    def open_message(self):\n        return self._open(b'', b'')\n",
}


@pytest.mark.parametrize("rel", sorted(PLANTED))
def test_the_scanner_catches_a_planted_violation(rel: str) -> None:
    source, expected = PLANTED[rel]
    found = [str(v) for v in scan_source(rel, source)]
    assert found, f"nothing found in planted {rel}"
    for fragment in expected:
        assert any(fragment in f for f in found), (fragment, found)
    assert all(f.startswith(rel + ":") for f in found)


@pytest.mark.parametrize("rel", sorted(ALLOWED))
def test_the_scanner_accepts_the_allowed_uses(rel: str) -> None:
    assert scan_source(rel, ALLOWED[rel]) == []


def test_the_scanner_finds_a_violation_planted_in_a_copy_of_src(tmp_path: Path) -> None:
    """End to end on a real tree: copy src/keyhold, plant one line in a route, scan."""
    import shutil

    copy = tmp_path / "keyhold"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "web"))
    assert scan_tree(copy) == []
    route = copy / "api" / "routes_staff.py"
    route.write_text(
        route.read_text() + "\n\nasync def _peek(svc, conn, row):\n"
        "    return (await svc.keys.key_for(conn, row.conversation_id, row.epoch)).open_message(1, 2, b'')\n"
    )
    found = [str(v) for v in scan_tree(copy)]
    assert len(found) == 2 and all(f.startswith("api/routes_staff.py:") for f in found), found
