"""`keyhold safety hash FILE...` and `keyhold safety hashes check [FILE]`: the hashes an operator
puts in the attachment hash lists, and checking `safety-hashes.toml` before the server reads it.

numpy, Pillow and pdqhash load inside the commands: every other `keyhold` command starts
without them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from keyhold.cli.common import HomeOption, console, fail, settings_for

LISTS_FILE = "safety-hashes.toml"  # keyhold.safety.hash_lists.HASH_LISTS_FILE, without loading numpy

hashes_app = typer.Typer(
    help=f"The attachment hash lists: <home>/{LISTS_FILE} (see docs/safety.md).", no_args_is_help=True
)


def hash_files(
    files: Annotated[list[Path], typer.Argument(help="Files to hash.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of results.")] = False,
    list_of: Annotated[
        Literal["sha256", "pdq"] | None,
        typer.Option("--list-of", help="Print only this hash, one a line: ready to append to a hash file."),
    ] = None,
) -> None:
    """Print each file's SHA-256 and, for an image, its PDQ hash and quality.

    Quality runs from 0 to 100; an image below 50 (flat, nearly blank) is not matched by PDQ.
    """
    from keyhold.safety.image_hashes import hashes_of

    results: list[dict[str, object]] = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            fail(f"{path}: {exc.strerror}")
        results.append({"file": str(path), **hashes_of(data)})
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    for result in results:
        if list_of is not None:
            if result[list_of] is not None:
                sys.stdout.write(f"{result[list_of]}  # {result['file']}\n")
            continue
        pdq = (
            f"{result['pdq']}  quality {result['quality']}"
            if result["pdq"] is not None
            else f"none ({result['pdq_skipped']})"
        )
        sys.stdout.write(f"{result['file']}\n  sha256  {result['sha256']}\n  pdq     {pdq}\n")


@hashes_app.command("check")
def check(
    file: Annotated[
        Path | None, typer.Argument(help=f"The file to check (default: <home>/{LISTS_FILE}).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Check a hash-list file (and the hash files it names) before the server picks it up:
    exit 1 naming the first problem."""
    from keyhold.safety.hash_lists import HashListError, load

    path = file if file is not None else settings_for(home).home / LISTS_FILE
    if not path.exists():
        fail(f"{path} does not exist")
    try:
        lists = load(path)
    except HashListError as exc:
        fail(f"{path}: {exc}")
    console.print(f"[green]ok[/green]: {path} ({len(lists.lists)} lists)", highlight=False)
    for hash_list in lists.lists:
        distance = f", max_distance {hash_list.max_distance}" if hash_list.kind == "pdq" else ""
        console.print(
            f"  {hash_list.name}: {hash_list.kind}{distance}, {len(hash_list)} hashes"
            f" -> {hash_list.action} ({hash_list.category})",
            highlight=False,
            markup=False,
        )
