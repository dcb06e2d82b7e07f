"""The `keyhold` command: every command, registered here, in one place.

Operator commands (`init`, `serve`, `user`, `keys`, `staff add|list|totp-reset`, `audit
verify`, `legal export`, `transparency`, `demo`) act on a data dir in this process through the
services; the clients (`chat`, the staff workflows) talk to a server over its API through the
SDK; `bench` measures. Every command that touches a data dir takes `--home DIR`
(or `$KEYHOLD_HOME`); every client takes `--url` (or `$KEYHOLD_URL`).
"""

from __future__ import annotations

import typer

from keyhold.bench.access import access as bench_access
from keyhold.bench.connections import connections as bench_connections
from keyhold.bench.delivery import delivery as bench_delivery
from keyhold.bench.flood import flood as bench_flood
from keyhold.bench.safety import safety as bench_safety
from keyhold.bench.signin import signin as bench_signin
from keyhold.cli.admin import init, keys_app, serve, user_app
from keyhold.cli.demo import demo_app
from keyhold.cli.governance import audit_app, legal_app, staff_app
from keyhold.cli.safety import safety_app
from keyhold.cli.safety_hashes import hash_files, hashes_app
from keyhold.cli.transparency import transparency_app
from keyhold.clients.chat import COMMANDS_HELP, chat
from keyhold.clients.staff import LEGAL_COMMANDS, STAFF_COMMANDS, audit_entries

app = typer.Typer(
    help="Keyhold: direct messaging that says, enforces and proves who can read each conversation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command()(init)
app.command()(serve)
app.command("chat", epilog="Commands inside the chat:\n\n" + COMMANDS_HELP)(chat)
app.add_typer(user_app, name="user")
app.add_typer(keys_app, name="keys")

for name, command in STAFF_COMMANDS.items():
    staff_app.command(name)(command)
for name, command in LEGAL_COMMANDS.items():
    legal_app.command(name)(command)
audit_app.command("entries")(audit_entries)
app.add_typer(staff_app, name="staff")
app.add_typer(legal_app, name="legal")
app.add_typer(audit_app, name="audit")
app.add_typer(transparency_app, name="transparency")
safety_app.command("hash")(hash_files)
safety_app.add_typer(hashes_app, name="hashes")
app.add_typer(safety_app, name="safety")
app.add_typer(demo_app, name="demo")

bench_app = typer.Typer(help="Benchmarks (figures and how they were taken: docs/benchmarks.md).", no_args_is_help=True)
bench_app.command("delivery")(bench_delivery)
bench_app.command("connections")(bench_connections)
bench_app.command("access")(bench_access)
bench_app.command("signin")(bench_signin)
bench_app.command("safety")(bench_safety)
bench_app.command("flood")(bench_flood)
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()
