"""`keyhold safety policy show|check`: the minors' policy of a data dir (`safety-policy.toml`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from keyhold.cli.common import HomeOption, console, fail, settings_for
from keyhold.cli.safety_scan import eval_file, rules_app, test
from keyhold.safety.policy import POLICY_FILE, PolicyError, load

safety_app = typer.Typer(help="Safety: the minors' policy, scanning rules, the text scanner.", no_args_is_help=True)
policy_app = typer.Typer(
    help=f"The minors' policy, per region: <home>/{POLICY_FILE} (without it, the built-in defaults).",
    no_args_is_help=True,
)
safety_app.add_typer(policy_app, name="policy")
safety_app.add_typer(rules_app, name="rules")
safety_app.command("test")(test)
safety_app.command("eval")(eval_file)


def _policy_path(file: Path | None, home: Path | None) -> Path:
    return file if file is not None else settings_for(home).home / POLICY_FILE


@policy_app.command("show")
def show(
    region: Annotated[str | None, typer.Option(help="Only the rules that apply in this region.")] = None,
    home: HomeOption = None,
) -> None:
    """Print the policy in force, every value spelled out (as a file you could start from)."""
    path = _policy_path(None, home)
    try:
        policy = load(path)
    except PolicyError as exc:
        fail(f"{path}: {exc}")
        return
    source = f"# from {path}" if path.exists() else f"# {path} does not exist: the built-in defaults"
    if region is None:
        sys.stdout.write(f"{source}\n{policy.to_toml()}")
        return
    rules = policy.for_region(region)
    where = f"regions.{region}" if region in policy.regions else "default (no table of its own)"
    sys.stdout.write(f"{source}\n# region {region}: {where}\n")
    for key, value in vars(rules).items():
        sys.stdout.write(f"{key} = {value!r}\n".replace("'", '"'))


@policy_app.command("check")
def check(
    file: Annotated[Path | None, typer.Argument(help=f"The file to check (default: <home>/{POLICY_FILE}).")] = None,
    home: HomeOption = None,
) -> None:
    """Check a policy file before the server picks it up: exit 1 naming the first problem."""
    path = _policy_path(file, home)
    if not path.exists():
        fail(f"{path} does not exist")
    try:
        policy = load(path)
    except PolicyError as exc:
        fail(f"{path}: {exc}")
        return
    regions = ", ".join(sorted(policy.regions)) or "none"
    console.print(f"[green]ok[/green]: {path} (regions with rules of their own: {regions})", highlight=False)
