"""`keyhold safety test|eval` and `keyhold safety rules check`: the text scanner from the shell.

`test` scans one text through the same pipeline a server builds (`build_scanner`: the data
dir's rules file and the built-in scanner) and prints the verdict, the category, the scores
and what fired. `eval` measures the pipeline against a labeled JSONL file
(`keyhold.safety.evaluation` says how each figure is counted). The scanner's modules load
inside the commands, so `keyhold --help` stays quick.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.table import Table

from keyhold.cli.common import HomeOption, console, fail, settings_for

if TYPE_CHECKING:
    from keyhold.safety.scanning import Verdict

RULES_HELP = (
    "The operator's scanning rules: <home>/safety-rules.toml (terms, regular expressions, link domains)."
)
rules_app = typer.Typer(help=RULES_HELP, no_args_is_help=True)


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "action": verdict.action,
        "category": verdict.category,
        "scores": {name: score for name, score in sorted(verdict.scores.items()) if score},
        "fired": list(verdict.fired),
        "policy": verdict.policy,
        "support": verdict.support,
    }


def test(
    text: Annotated[str, typer.Argument(help="The message text to scan.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    minor_recipient: Annotated[
        bool,
        typer.Option(
            "--minor-recipient",
            help="Scan as sent by an adult who is not a friend to a minor (grooming weighs more).",
        ),
    ] = False,
    home: HomeOption = None,
) -> None:
    """Scan TEXT as a `standard` message: verdict, category, scores, fired rules and signals."""
    from keyhold.safety.pipeline import build_scanner
    from keyhold.safety.scanning import ScanContext

    settings = settings_for(home)
    scanner = build_scanner(settings.home)
    context = ScanContext(recipient_minor=minor_recipient, sender_adult_non_friend=minor_recipient)
    verdict = scanner.scan_local(text, context)
    result = _verdict_json(verdict)
    if scanner.rules.error:
        result["rules_error"] = scanner.rules.error
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    colour = {"allow": "green", "flag": "yellow", "hold": "yellow", "block": "red"}[verdict.action]
    console.print(f"verdict: [{colour}]{verdict.action}[/{colour}]", highlight=False)
    console.print(f"category: {verdict.category or '-'}", highlight=False)
    if verdict.support:
        console.print("support: yes (the member is pointed to support resources)", highlight=False)
    if verdict.policy:
        console.print(f"policy: {verdict.policy}", highlight=False)
    scores = ", ".join(f"{name} {score:.2f}" for name, score in result["scores"].items()) or "none"
    console.print(f"scores: {scores}", highlight=False)
    console.print(f"fired: {', '.join(verdict.fired) or 'nothing'}", highlight=False)
    if scanner.rules.error:
        console.print(f"[red]rules file not in force[/red]: {scanner.rules.error}", highlight=False)


def _figures_table(title: str, figures: dict[str, Any]) -> Table:
    table = Table("category", "precision", "recall", "F1", "labelled", "predicted", title=title)

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, row in figures["categories"].items():
        table.add_row(
            name,
            shown(row["precision"]),
            shown(row["recall"]),
            shown(row["f1"]),
            str(row["labelled"]),
            str(row["predicted"]),
        )
    block, detected = figures["block"], figures["detected"]
    table.add_row(
        "block (harmful)",
        shown(block["precision"]),
        shown(block["recall"]),
        shown(block["f1"]),
        str(figures["harmful"]),
        str(block["decisions"]),
    )
    table.add_row(
        "detected (harmful)",
        shown(detected["precision"]),
        shown(detected["recall"]),
        shown(detected["f1"]),
        str(figures["harmful"]),
        str(detected["decisions"]),
    )
    return table


def _confusion_table(figures: dict[str, Any]) -> Table:
    labels = list(figures["confusion"])
    short = {
        label: label.replace("sexual_extortion", "sextort").replace("violent_threat", "threat")
        for label in labels
    }
    table = Table("label \\ predicted", *[short[label] for label in labels], title="Confusion (rows: label)")
    for label, row in figures["confusion"].items():
        table.add_row(short[label], *[str(row[other]) for other in labels])
    return table


def eval_file(
    file: Annotated[
        Path, typer.Argument(help="A JSONL file of labeled messages (tests/data/safety/README.md).")
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
    home: HomeOption = None,
) -> None:
    """Precision, recall and F1 per category and for `block` decisions, with the confusion
    table, for FILE and for its hard lines. A block counts as correct when the message is
    harmful (any label but benign); the predicted category is the one that decided a
    non-allow verdict (an allow with self-harm support counts as self_harm), else benign."""
    from keyhold.safety.evaluation import EvalFileError, evaluate, load_examples
    from keyhold.safety.pipeline import build_scanner

    if not file.exists():
        fail(f"{file} does not exist")
    try:
        examples = load_examples(file)
    except EvalFileError as exc:
        fail(f"{file}: {exc}")
    scanner = build_scanner(settings_for(home).home)
    report = asyncio.run(evaluate(scanner, examples, str(file)))
    for part, title in (("all", "every line"), ("hard", "hard lines only")):
        figures = report[part]
        console.print(_figures_table(f"{file.name}: {title} ({figures['examples']} messages)", figures))
        console.print(_confusion_table(figures))
    console.print(f"actions: {report['all']['actions']}", highlight=False)
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        console.print(f"figures written to {json_out}", highlight=False)


@rules_app.command("check")
def rules_check(
    file: Annotated[
        Path | None, typer.Argument(help="The file to check (default: <home>/safety-rules.toml).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Check a rules file before the server picks it up: exit 1 naming the first problem."""
    from keyhold.safety.rules import RULES_FILE, RulesError, load

    path = file if file is not None else settings_for(home).home / RULES_FILE
    if not path.exists():
        fail(f"{path} does not exist")
    try:
        rules = load(path)
    except RulesError as exc:
        fail(f"{path}: {exc}")
    kinds = ", ".join(f"{rule.name} ({rule.kind}, {rule.action})" for rule in rules.rules) or "no rules"
    console.print(f"[green]ok[/green]: {path}: {kinds}", highlight=False)
