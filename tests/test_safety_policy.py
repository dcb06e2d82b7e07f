"""The minors' policy file (issue 9, item 1, first part): bands by age on the day, per-region
rules, refusals that name the problem, reloading in a running server, and the
`keyhold safety policy show|check` commands. (Enforcement through the API comes with the
send-policy seam.)"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import httpx
import pytest

from conftest import PASSWORD, TLS, keyhold_cli, start_server, stop_server, unique
from keyhold.core.ages import age_on
from keyhold.safety.policy import (
    DEFAULT_POLICY,
    Band,
    PolicyError,
    RegionPolicy,
    parse,
)
from keyhold.safety.policy import policy_file as load_policy_file


@pytest.mark.parametrize(
    ("born", "today", "band"),
    [
        ("2013-06-15", "2026-06-15", Band.YOUNG_TEEN),  # 13 today
        ("2010-06-15", "2026-06-14", Band.YOUNG_TEEN),  # 16 tomorrow
        ("2010-06-15", "2026-06-15", Band.TEEN),  # 16 today: the next rules, that day
        ("2008-06-15", "2026-06-14", Band.TEEN),
        ("2008-06-15", "2026-06-15", Band.ADULT),  # 18 today
        ("2008-02-29", "2026-02-28", Band.TEEN),  # a leap-day birthday comes on 1 March
        ("2008-02-29", "2026-03-01", Band.ADULT),
        ("1950-01-01", "2026-12-01", Band.ADULT),
    ],
)
def test_the_band_follows_the_birthday_on_the_day(born: str, today: str, band: Band) -> None:
    assert DEFAULT_POLICY.default.band(dt.date.fromisoformat(born), dt.date.fromisoformat(today)) == band


def test_under_the_minimum_age_there_is_no_band() -> None:
    with pytest.raises(PolicyError, match="younger than 13"):
        RegionPolicy().band(dt.date(2014, 1, 2), dt.date(2027, 1, 1))
    assert age_on(dt.date(2014, 1, 2), dt.date(2027, 1, 2)) == 13


def test_regions_override_the_default_and_inherit_the_rest() -> None:
    policy = parse(
        """
        [default]
        dm_off_below = 15

        [regions.eu]
        dm_off_below = 16
        teen_default_audience = "friends"
        """
    )
    assert policy.for_region("us") == RegionPolicy(dm_off_below=15)
    assert policy.for_region("eu") == RegionPolicy(dm_off_below=16, teen_default_audience="friends")
    assert parse(policy.to_toml()) == policy  # what `show` prints reads back as the same policy


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[default]\nmin_age = 12\n", "min_age: cannot be below 13"),
        ('[default]\nteen_default_audience = "everyone"\n', "never everyone"),
        (
            "[default]\ndm_off_below = 19\nfriends_only_below = 18\n",
            "min_age <= dm_off_below <= friends_only_below",
        ),
        ('[default]\ndm_off_below = "16"\n', "whole number of years"),
        ("[default]\ndm_off_below = true\n", "whole number of years"),
        ("[default]\ndm_off_below = 99\n", "whole number of years"),
        ("[default]\ndm_offbelow = 16\n", "unknown setting 'dm_offbelow'"),
        ("[defaults]\n", "unknown table 'defaults'"),
        ("[regions.EU]\n", "a region name is lower-case"),
        ("[regions]\neu = 3\n", "regions.eu: must be a table"),
        ("[default\n", "not TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_a_running_server_picks_up_changes_and_keeps_the_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "safety-policy.toml"
    now = [0.0]
    policy_file = load_policy_file(path, clock=lambda: now[0])
    assert policy_file.current() == DEFAULT_POLICY  # no file: the defaults
    path.write_text("[default]\ndm_off_below = 15\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert policy_file.current() == DEFAULT_POLICY  # checked at most once a second
    now[0] = 2.0
    assert policy_file.current().default.dm_off_below == 15
    path.write_text("[default]\ndm_off_below = 'x'\n")
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    now[0] = 4.0
    assert policy_file.current().default.dm_off_below == 15  # the broken file is not used
    assert policy_file.error is not None and "whole number" in policy_file.error
    path.unlink()
    now[0] = 6.0
    assert policy_file.current() == DEFAULT_POLICY and policy_file.error is None


def test_the_commands_show_and_check_a_data_dirs_policy(tmp_path: Path) -> None:
    home = tmp_path / "kh"
    home.mkdir()
    shown = keyhold_cli("safety", "policy", "show", "--home", str(home))
    assert "built-in defaults" in shown.stdout and "dm_off_below = 16" in shown.stdout
    missing = keyhold_cli("safety", "policy", "check", "--home", str(home), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr + missing.stdout
    (home / "safety-policy.toml").write_text('[regions.eu]\nteen_default_audience = "friends"\n')
    checked = keyhold_cli("safety", "policy", "check", "--home", str(home))
    assert "ok" in checked.stdout and "eu" in checked.stdout
    eu = keyhold_cli("safety", "policy", "show", "--region", "eu", "--home", str(home))
    assert 'teen_default_audience = "friends"' in eu.stdout and "regions.eu" in eu.stdout
    other = keyhold_cli("safety", "policy", "show", "--region", "us", "--home", str(home))
    assert 'teen_default_audience = "no_one"' in other.stdout and "default" in other.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[default]\nmin_age = 10\n")
    refused = keyhold_cli("safety", "policy", "check", str(bad), check=False)
    assert refused.returncode == 1 and "cannot be below 13" in refused.stderr + refused.stdout


async def test_registration_follows_the_regions_minimum_age_and_its_changes(tmp_path: Path) -> None:
    """A region may set a higher minimum than 13; a running server follows the file as it
    changes, and a broken file leaves the rules in force."""
    home = tmp_path / "kh"
    home.mkdir()
    (home / "safety-policy.toml").write_text("[regions.eu]\nmin_age = 14\n")
    server = start_server(home)
    today = dt.date.today()
    thirteen = (
        today.replace(year=today.year - 13)
        if (today.month, today.day) != (2, 29)
        else dt.date(today.year - 13, 3, 1)
    )

    async def register(region: str) -> httpx.Response:
        async with httpx.AsyncClient(verify=TLS, base_url=server.url + "/api/v1") as http:
            body = {
                "username": unique(),
                "password": PASSWORD,
                "birthdate": thirteen.isoformat(),
                "region": region,
            }
            return await http.post("/accounts", json=body)

    try:
        refused = await register("eu")
        assert refused.status_code == 403 and "at least 14" in refused.json()["detail"]
        assert (await register("us")).status_code == 201
        (home / "safety-policy.toml").write_text("[regions.eu]\nmin_age = 13\n")
        for _ in range(100):  # the server re-reads the file within about a second
            if (answer := await register("eu")).status_code == 201:
                break
            await asyncio.sleep(0.1)
        assert answer.status_code == 201
        (home / "safety-policy.toml").write_text("[regions.eu]\nmin_age = 14\n")
        for _ in range(100):
            if (answer := await register("eu")).status_code == 403:
                break
            await asyncio.sleep(0.1)
        assert answer.status_code == 403
        (home / "safety-policy.toml").write_text("[regions.eu]\nmin_age = 'fourteen'\n")
        await asyncio.sleep(1.2)  # past the next re-read
        assert (await register("eu")).status_code == 403  # the last good policy, not the defaults
    finally:
        stop_server(server)
