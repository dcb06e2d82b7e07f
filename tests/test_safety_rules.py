"""The operator's rules file: parse errors named, each kind of rule, link domains and their
subdomains, regular expressions, reload on change keeping the last good rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import keyhold_cli

from keyhold.safety.pipeline import build_scanner
from keyhold.safety.rules import RULES_FILE, RulesError, RulesScanner, load, parse
from keyhold.safety.scanning import ScanContext

GOOD = """
[[rule]]
name = "bad-domains"
category = "scam"
action = "block"
domains = ["evil.example.com", "*.phish.net"]
policy = "Links to this site are not delivered."

[[rule]]
name = "casino"
category = "spam"
action = "flag"
terms = ["casino bonus", "free spins!"]

[[rule]]
name = "card-numbers"
category = "scam"
action = "hold"
regex = '\\b(?:\\d[ -]?){15}\\d\\b'
"""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def rule(body: str, name: str = "r1", category: str = "spam", action: str = "flag") -> str:
    return f'[[rule]]\nname = "{name}"\ncategory = "{category}"\naction = "{action}"\n{body}\n'


async def scan(scanner: RulesScanner, text: str) -> tuple[str, str | None, tuple[str, ...]]:
    verdict = await scanner.scan(text, ScanContext())
    return verdict.action, verdict.category, verdict.fired


@pytest.fixture
def rules_scanner(tmp_path: Path) -> RulesScanner:
    path = tmp_path / RULES_FILE
    path.write_text(GOOD)
    return RulesScanner(path)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[rule]\n", "not TOML"),
        ("[rules]\nx = 1\n", "unknown table 'rules'"),
        ('rule = "x"\n', "write each rule as a [[rule]] table"),
        ('[[rule]]\ncategory = "spam"\naction = "flag"\nterms = ["a"]\n', "rule 1: 'name'"),
        (rule('terms = ["a"]', name="Bad Name"), "rule 1: 'name'"),
        (rule('terms = ["a"]', category="phishing"), "rule 1 (r1): 'category' must be one of"),
        (rule('terms = ["a"]', action="delete"), "rule 1 (r1): 'action' must be flag, hold or block"),
        (rule('terms = ["a"]', action="allow"), "rule 1 (r1): 'action'"),
        (
            rule('terms = ["a"]', category="self_harm", action="block"),
            "rule 1 (r1): self_harm is never punished",
        ),
        (rule('terms = ["a"]\nregex = "b"'), "rule 1 (r1): needs exactly one of terms, regex, domains"),
        (rule(""), "rule 1 (r1): needs exactly one of"),
        (rule("terms = []"), "rule 1 (r1).terms: must be a non-empty list"),
        (rule('terms = ["..."]'), "rule 1 (r1).terms: '...' has no letters or digits"),
        (rule('regex = "(unclosed"'), "rule 1 (r1).regex: not a valid RE2 regular expression (missing )"),
        (rule('regex = "(?=lookahead)"'), "rule 1 (r1).regex: not a valid RE2"),
        (rule('regex = "' + "a" * 2001 + '"'), "rule 1 (r1).regex: longer than 2000"),
        (rule('regex = "(?:a{1000}){1000}"'), "rule 1 (r1).regex: not a valid RE2"),
        (rule('domains = ["not a domain"]'), "rule 1 (r1).domains: 'not a domain' is not a domain name"),
        (rule('terms = ["a"]\ncolour = "red"'), "rule 1 (r1): unknown setting 'colour'"),
        (rule('terms = ["a"]') + rule('terms = ["b"]'), "rule 2 (r1): the name is used by an earlier rule"),
        (rule('terms = ["a"]\npolicy = 3'), "rule 1 (r1): 'policy' must be a sentence"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(RulesError) as caught:
        parse(text)
    assert problem in str(caught.value)


def test_no_file_means_no_rules(tmp_path: Path) -> None:
    assert load(tmp_path / "missing.toml").rules == ()


def test_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / RULES_FILE
    path.write_bytes(b"\xff\xfe[[rule]]")
    with pytest.raises(RulesError, match="not UTF-8"):
        load(path)


# --- each kind of rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "get your casino bonus now",
        "C4SINO b o n u s",
        "c\u0430sino bonus",
        "casi\u200bno bonus",
        "FREE SPINS",
    ],
)
async def test_terms_match_on_the_normalized_text(rules_scanner: RulesScanner, text: str) -> None:
    assert await scan(rules_scanner, text) == ("flag", "spam", ("rule:casino",))


@pytest.mark.parametrize("text", ["the casino was fun", "bonus points", "casinobonus"])
async def test_terms_match_whole_words_only(rules_scanner: RulesScanner, text: str) -> None:
    assert (await scan(rules_scanner, text))[0] == "allow"


@pytest.mark.parametrize(
    "text",
    [
        "visit evil.example.com now",
        "https://evil.example.com/login",
        "http://login.evil.example.com:8443/x",
        "see https://user@evil.example.com/",
        "a.b.phish.net/path",
        "www.phish.net",
    ],
)
async def test_a_domain_matches_its_host_and_subdomains(rules_scanner: RulesScanner, text: str) -> None:
    verdict = await rules_scanner.scan(text, ScanContext())
    assert verdict.action == "block"
    assert verdict.category == "scam"
    assert verdict.policy == "Links to this site are not delivered."


@pytest.mark.parametrize(
    "text",
    ["notevil.example.com", "evil.example.com.attacker.org", "https://example.com", "evil example com"],
)
async def test_a_domain_does_not_match_look_alike_suffixes(rules_scanner: RulesScanner, text: str) -> None:
    assert (await scan(rules_scanner, text))[0] == "allow"


async def test_regex_matches_the_text_as_written(rules_scanner: RulesScanner) -> None:
    assert await scan(rules_scanner, "card 4111 1111 1111 1111 ok") == (
        "hold",
        "scam",
        ("rule:card-numbers",),
    )
    assert (await scan(rules_scanner, "order 4111 1111 ok"))[0] == "allow"


async def test_the_most_severe_matching_rule_decides(rules_scanner: RulesScanner) -> None:
    verdict = await rules_scanner.scan("casino bonus at evil.example.com", ScanContext())
    assert verdict.action == "block"
    assert set(verdict.fired) == {"rule:casino", "rule:bad-domains"}
    assert verdict.scores == {"spam": 1.0, "scam": 1.0}


def test_a_case_insensitive_regex() -> None:
    rules = parse(rule('regex = "(?i)wire\\\\s+transfer"', action="hold"))
    from keyhold.safety.normalize import normalize

    assert rules.scan("WIRE   Transfer", normalize("WIRE   Transfer")).action == "hold"


# --- reloading -------------------------------------------------------------------------------


async def test_reload_on_change_keeps_the_last_good_rules(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / RULES_FILE
    path.write_text(rule('terms = ["alpha"]', name="first"))
    scanner = RulesScanner(path, clock=clock)
    assert (await scan(scanner, "alpha"))[2] == ("rule:first",)

    path.write_text(rule('terms = ["alpha"]', name="first") + "[[rule]\n")  # a broken edit
    clock.now += 1.5
    assert (await scan(scanner, "alpha"))[2] == ("rule:first",)  # still in force
    assert scanner.error is not None and "not TOML" in scanner.error

    path.write_text(rule('terms = ["beta"]', name="second"))
    clock.now += 1.5
    assert (await scan(scanner, "beta"))[2] == ("rule:second",)
    assert (await scan(scanner, "alpha"))[0] == "allow"
    assert scanner.error is None


async def test_the_file_is_checked_at_most_once_a_second(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / RULES_FILE
    scanner = RulesScanner(path, clock=clock)  # no file yet: no rules
    assert (await scan(scanner, "gamma"))[0] == "allow"
    path.write_text(rule('terms = ["gamma"]'))
    clock.now += 0.5
    assert (await scan(scanner, "gamma"))[0] == "allow"  # not looked at yet
    clock.now += 0.6
    assert (await scan(scanner, "gamma"))[0] == "flag"


async def test_rules_take_part_in_the_pipeline(tmp_path: Path) -> None:
    (tmp_path / RULES_FILE).write_text(GOOD)
    pipeline = build_scanner(tmp_path)
    verdict = await pipeline.scan("great casino bonus, lol", ScanContext())
    assert verdict.action == "flag"
    assert "rule:casino" in verdict.fired
    blocked = await pipeline.scan("hi! check evil.example.com", ScanContext())
    assert blocked.action == "block"
    assert blocked.policy == "Links to this site are not delivered."


def test_rules_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    done = keyhold_cli("safety", "rules", "check", str(good))
    assert "ok" in done.stdout and "casino (terms, flag)" in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(rule('terms = ["a"]', category="phishing"))
    refused = keyhold_cli("safety", "rules", "check", str(bad), check=False)
    assert refused.returncode == 1
    assert "rule 1 (r1): 'category' must be one of" in refused.stderr
