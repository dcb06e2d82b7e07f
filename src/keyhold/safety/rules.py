"""The operator's scanning rules: `<home>/safety-rules.toml`, re-read by a running server.

Each `[[rule]]` has a name, a category, an action and exactly one of three kinds of match:

    [[rule]]
    name = "known-scam-domains"
    category = "scam"               # one of scanning.CATEGORIES
    action = "block"                # flag | hold | block (self_harm: flag only, never punished)
    domains = ["paypa1-secure.example", "bit.ly"]   # a link's host, or any subdomain of it
    policy = "Links to this site are not delivered."  # optional: what a blocked sender is told

    [[rule]]
    name = "casino-spam"
    category = "spam"
    action = "flag"
    terms = ["casino bonus", "free spins"]   # whole words, on the normalized text

    [[rule]]
    name = "card-numbers"
    category = "scam"
    action = "hold"
    regex = '\\b(?:\\d[ -]?){15}\\d\\b'       # RE2 syntax, on the text as written

- **terms** are matched as whole words on the normalized message, so `casino bonus` also
  catches `C4SINO b o n u s` and `c\u0430sino bonus` with a Cyrillic a (U+0430); punctuation in a term
  separates words.
- **regex** is RE2 (linear time: no backreferences or lookarounds), compiled once with a memory
  limit, and searched in the message after NFKC with invisible characters removed (case as
  written: start with `(?i)` to ignore it).
- **domains** match the host of every link in the message (with or without `https://`) and its
  subdomains: `example.com` matches `example.com` and `login.example.com`, not `badexample.com`.

A file that does not parse is refused as a whole with a message naming the rule and the
problem; the running server keeps the last good rules (`RulesScanner`, via `ReloadingFile`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2  # type: ignore[import-untyped]

from keyhold.safety.normalize import Normalized, fold, normalize, visible
from keyhold.safety.phrases import PhraseBook
from keyhold.safety.reloading import ReloadingFile, read_text, toml_tables
from keyhold.safety.scanning import ACTIONS, ALLOW, CATEGORIES, Action, ScanContext, Verdict

RULES_FILE = "safety-rules.toml"
MAX_RULES = 1000
MAX_ITEMS = 10_000  # terms or domains in one rule
MAX_TERM_CHARS = 200
MAX_REGEX_CHARS = 2000
REGEX_MAX_MEM = 1 << 20  # bytes RE2 may use for one compiled pattern
RULE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")
KINDS = ("terms", "regex", "domains")
KNOWN_KEYS = {"name", "category", "action", "policy", *KINDS}


class RulesError(ValueError):
    """The rules file is not valid; the message names the rule and the problem."""


@dataclass(frozen=True)
class Rule:
    name: str
    category: str
    action: Action
    kind: str  # terms | regex | domains
    policy: str = ""
    domains: tuple[str, ...] = ()
    regex: Any = None  # a compiled re2 pattern


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...] = ()
    terms: PhraseBook = field(default_factory=lambda: PhraseBook([]))

    @property
    def vocabulary(self) -> frozenset[str]:
        return self.terms.vocabulary

    def scan(self, text: str, norm: Normalized) -> Verdict:
        """The verdict of every rule that matches (the most severe action decides)."""
        by_name = {rule.name: rule for rule in self.rules}
        matched = [by_name[name] for name in self.terms.matches(norm)]
        shown: str | None = None
        hosts = [link.host for link in norm.links]
        for rule in self.rules:
            if rule.kind == "regex":
                shown = visible(text) if shown is None else shown
                if rule.regex.search(shown):
                    matched.append(rule)
            elif rule.kind == "domains" and hosts and any(_host_in(host, rule.domains) for host in hosts):
                matched.append(rule)
        if not matched:
            return ALLOW
        top = max(matched, key=lambda rule: ACTIONS.index(rule.action))
        scores = {rule.category: 1.0 for rule in matched}
        fired = tuple(dict.fromkeys(f"rule:{rule.name}" for rule in matched))
        policy = top.policy or f"This message matches the operator's {top.category.replace('_', ' ')} rules."
        support = any(rule.category == "self_harm" for rule in matched)
        return Verdict(top.action, top.category, scores, fired, policy, support)


EMPTY_RULES = Rules()


def _host_in(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def _strings(value: Any, where: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise RulesError(f"{where}: must be a non-empty list of non-empty strings")
    if len(value) > MAX_ITEMS:
        raise RulesError(f"{where}: at most {MAX_ITEMS} entries")
    for item in value:
        if len(item) > limit:
            raise RulesError(f"{where}: {item[:40]!r}… is longer than {limit} characters")
    return value


def _term_pattern(term: str, where: str) -> str:
    words = re.findall(r"[^\W_]+", fold(term))
    if not words:
        raise RulesError(f"{where}: {term!r} has no letters or digits")
    return " ".join(words)


def _domain(value: str, where: str) -> str:
    domain = value.strip().lower().removeprefix("*.").strip(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise RulesError(f"{where}: {value!r} is not a domain name") from None
    if not DOMAIN.fullmatch(domain):
        raise RulesError(f"{where}: {value!r} is not a domain name (like example.com)")
    return domain


def _regex(value: Any, where: str) -> Any:
    if not isinstance(value, str) or not value:
        raise RulesError(f"{where}: must be a non-empty string")
    if len(value) > MAX_REGEX_CHARS:
        raise RulesError(f"{where}: longer than {MAX_REGEX_CHARS} characters")
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False
    try:
        return re2.compile(value, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RulesError(f"{where}: not a valid RE2 regular expression ({reason})") from None


def _rule(table: Any, number: int) -> tuple[Rule, list[str]]:
    where = f"rule {number}"
    if not isinstance(table, dict):
        raise RulesError(f"{where}: must be a table ([[rule]])")
    name = table.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise RulesError(f"{where}: 'name' must be lower-case letters, digits, - and _ (at most 64)")
    where = f"rule {number} ({name})"
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    category, action, policy = table.get("category"), table.get("action"), table.get("policy", "")
    if category not in CATEGORIES:
        raise RulesError(f"{where}: 'category' must be one of {', '.join(CATEGORIES)}")
    if action not in ("flag", "hold", "block"):
        raise RulesError(f"{where}: 'action' must be flag, hold or block")
    if category == "self_harm" and action != "flag":
        raise RulesError(f"{where}: self_harm is never punished: its action can only be flag")
    if not isinstance(policy, str) or len(policy) > 300:
        raise RulesError(f"{where}: 'policy' must be a sentence of at most 300 characters")
    kinds = [kind for kind in KINDS if kind in table]
    if len(kinds) != 1:
        raise RulesError(f"{where}: needs exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    base = Rule(name=name, category=category, action=action, kind=kind, policy=policy)
    if kind == "terms":
        terms = _strings(table["terms"], f"{where}.terms", MAX_TERM_CHARS)
        return base, [_term_pattern(term, f"{where}.terms") for term in terms]
    if kind == "domains":
        domains = _strings(table["domains"], f"{where}.domains", 253)
        return Rule(**{**vars(base), "domains": tuple(_domain(d, f"{where}.domains") for d in domains)}), []
    return Rule(**{**vars(base), "regex": _regex(table["regex"], f"{where}.regex")}), []


def parse(text: str) -> Rules:
    data = toml_tables(text, RulesError, ("rule",), "unknown table {name} (rules are written as [[rule]] tables)")
    tables = data.get("rule", [])
    if not isinstance(tables, list):
        raise RulesError("rule: write each rule as a [[rule]] table")
    if len(tables) > MAX_RULES:
        raise RulesError(f"at most {MAX_RULES} rules")
    rules: list[Rule] = []
    phrases: list[tuple[str, str]] = []
    seen: set[str] = set()
    for number, table in enumerate(tables, 1):
        rule, patterns = _rule(table, number)
        if rule.name in seen:
            raise RulesError(f"rule {number} ({rule.name}): the name is used by an earlier rule")
        seen.add(rule.name)
        rules.append(rule)
        if patterns:
            phrases.append((rule.name, " || ".join(patterns)))
    return Rules(tuple(rules), PhraseBook(phrases))


def load(path: Path) -> Rules:
    """The rules in `path`; no rules if there is no such file."""
    text = read_text(path, RulesError)
    return EMPTY_RULES if text is None else parse(text)


class RulesScanner:
    """A `Scanner` over the rules file of a data dir, re-read when it changes (at most once a
    second); a file that does not parse leaves the last good rules in force (`error` says why)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._file = ReloadingFile(path, load, EMPTY_RULES, errors=(RulesError,), clock=clock)

    @property
    def error(self) -> str | None:
        return self._file.error

    def current(self) -> Rules:
        return self._file.current()

    async def scan(self, text: str, context: ScanContext) -> Verdict:
        rules = self.current()
        if not rules.rules:
            return ALLOW
        return rules.scan(text, normalize(text, rules.vocabulary))
