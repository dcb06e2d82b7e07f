#!/usr/bin/env bash
# pg-test-cluster.sh - throwaway PostgreSQL server for `make test`.
#
# The test suite runs its `postgres`-marked tests against a real PostgreSQL
# server as well as SQLite. This script gives each test run a private,
# disposable cluster: its own data directory, a free loopback port, trust
# auth, and fsync turned off. It never touches the system cluster on 5432.
#
# Usage:
#   scripts/pg-test-cluster.sh start  DIR   # prints the SQLAlchemy URL on stdout
#   scripts/pg-test-cluster.sh stop   DIR   # stops the server, removes DIR (idempotent)
#   scripts/pg-test-cluster.sh halt   DIR   # stops the server (fast shutdown), keeps DIR
#   scripts/pg-test-cluster.sh resume DIR   # starts a halted server again on its port,
#                                           # prints the same URL as `start`
#
# halt/resume let a test take the database away from a running Keyhold server
# and give it back (an outage) without losing the data; both are idempotent.
#
# DIR must be absent or empty, and its parent directories must be traversable
# by the `postgres` user, e.g.  DIR=$(mktemp -d /tmp/keyhold-pg.XXXXXX)
# The only line `start` prints on stdout is the URL
#   postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
# and the port is also written to DIR/port. Everything else goes to stderr.
# Must run as root (PostgreSQL itself runs as `postgres`; the script may
# apt-get install the server if it is missing).
set -euo pipefail

PROG=$(basename "$0")
PG_USER=postgres
MARKER=.pg-test-cluster

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

usage() {
    cat >&2 <<EOF
usage: $PROG start DIR   start a throwaway cluster in DIR, print its SQLAlchemy URL
       $PROG stop DIR    stop the cluster in DIR and remove DIR (no-op if gone)
       $PROG halt DIR    stop the cluster in DIR (fast shutdown), keep its data
       $PROG resume DIR  start a halted cluster in DIR again on the same port, print its URL
EOF
    exit 2
}

# Run a command as the postgres user from a directory it can enter (avoids
# "could not change directory to /root" noise).
as_pg() {
    (cd / && runuser -u "$PG_USER" -- "$@")
}

# Newest installed server bin dir, e.g. /usr/lib/postgresql/15/bin (empty if none).
find_pg_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] || continue
        if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1)" == "$d" ]]; then
            best=$d
        fi
    done
    printf '%s' "$best"
}

ensure_server_installed() {
    PG_BIN=$(find_pg_bin)
    if [[ -n "$PG_BIN" ]]; then
        return
    fi
    [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb) and not root, cannot install them"
    command -v apt-get >/dev/null || die "PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL manually"
    log "PostgreSQL server not found, installing it with apt-get (one-time)..."
    {
        apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
    } >&2 || die "apt-get install postgresql failed"
    PG_BIN=$(find_pg_bin)
    [[ -n "$PG_BIN" ]] || die "apt-get install postgresql succeeded but no /usr/lib/postgresql/*/bin/initdb was found"
}

# True if DIR_DATA/postmaster.pid names a live (non-zombie) postgres process.
postmaster_alive() {
    local pidfile="$1/postmaster.pid" pid state comm
    [[ -f "$pidfile" ]] || return 1
    pid=$(head -n1 "$pidfile" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/status" ]] || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ "$state" != Z && -n "$state" ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ "$comm" == postgres* ]] || return 1   # pid reused by something else
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Start the server of DIR/data on 127.0.0.1:PORT (the log is appended to DIR/log).
pg_start() {
    local dir=$1 port=$2
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
        -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >&2
}

# pg_ctl -w already waited; double-check that TCP connections are accepted.
wait_ready() {
    local dir=$1 port=$2 i
    for i in $(seq 1 100); do
        if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres; then
            return 0
        fi
        (( i < 100 )) || { tail -n 30 "$dir/log" >&2; die "server on 127.0.0.1:$port did not become ready"; }
        sleep 0.1
    done
}

pg_url() {
    printf 'postgresql+asyncpg://%s@127.0.0.1:%s/postgres' "$PG_USER" "$1"
}

# DIR must hold a cluster made by `start` (for halt and resume).
require_cluster() {
    local dir=$1
    [[ -d "$dir" ]] || die "$dir does not exist (create the cluster with '$PROG start $dir')"
    [[ -e "$dir/$MARKER" && -d "$dir/data" ]] || die "$dir is not a cluster made by '$PROG start'"
}

abs_dir() {
    local d=$1
    [[ -n "$d" ]] || die "DIR must not be empty"
    [[ "$d" == /* ]] || d="$PWD/$d"
    # Normalise without requiring existence; strip trailing slashes.
    d=$(realpath -m -- "$d")
    [[ "$d" != "/" ]] || die "refusing to use / as DIR"
    printf '%s' "$d"
}

cmd_start() {
    local dir port url attempt
    dir=$(abs_dir "$1")

    [[ $EUID -eq 0 ]] || die "must run as root (the server runs as user '$PG_USER' via runuser)"
    command -v runuser >/dev/null || die "runuser not found (package util-linux)"
    command -v python3 >/dev/null || die "python3 not found (needed to pick a free port)"

    ensure_server_installed
    id -u "$PG_USER" >/dev/null 2>&1 || die "user '$PG_USER' does not exist (it is created by the postgresql package)"

    if [[ -e "$dir" ]]; then
        [[ -d "$dir" ]] || die "$dir exists and is not a directory"
        if [[ -n "$(ls -A -- "$dir")" ]]; then
            die "$dir is not empty (already a cluster? run '$PROG stop $dir' first)"
        fi
    else
        mkdir -p -- "$dir" || die "cannot create $dir"
    fi
    touch "$dir/$MARKER"
    chown "$PG_USER:" "$dir" "$dir/$MARKER"
    chmod 755 "$dir"

    if ! as_pg test -r "$dir" -a -w "$dir" -a -x "$dir"; then
        die "user '$PG_USER' cannot access $dir: every parent directory must be traversable (o+x); use e.g. DIR=\$(mktemp -d /tmp/keyhold-pg.XXXXXX)"
    fi

    # Unix socket path (DIR/.s.PGSQL.NNNNN) must fit in sun_path (107 bytes).
    (( ${#dir} + 18 <= 107 )) || die "$dir is too long for a Unix socket directory (max ~89 chars); use a shorter path under /tmp"

    log "initdb ($PG_BIN) into $dir/data"
    if ! as_pg "$PG_BIN/initdb" -D "$dir/data" --auth=trust -U "$PG_USER" -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2
        die "initdb failed (see above); clean up with '$PROG stop $dir'"
    fi

    # The port is picked by binding port 0 and releasing it, so another process
    # could grab it before postgres does; retry with a new port in that case.
    for attempt in 1 2 3 4 5; do
        port=$(free_port) || die "could not pick a free port with python3"
        [[ "$port" =~ ^[0-9]+$ ]] || die "python3 returned a bogus port: '$port'"
        log "starting server on 127.0.0.1:$port (attempt $attempt)"
        if pg_start "$dir" "$port"; then
            break
        fi
        if grep -qiE 'could not (bind|create listen)|address already in use' "$dir/log" 2>/dev/null && (( attempt < 5 )); then
            log "port $port was taken, retrying with another one"
            as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
            : >"$dir/log"
            continue
        fi
        [[ -f "$dir/log" ]] && tail -n 30 "$dir/log" >&2
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
        die "pg_ctl start failed (server log above, full log in $dir/log); clean up with '$PROG stop $dir'"
    done

    wait_ready "$dir" "$port"

    printf '%s\n' "$port" >"$dir/port"
    url=$(pg_url "$port")
    log "ready: $url (data in $dir, stop with '$PROG stop $dir')"
    printf '%s\n' "$url"
}

cmd_stop() {
    local dir
    dir=$(abs_dir "$1")

    if [[ ! -e "$dir" ]]; then
        log "$dir does not exist, nothing to stop"
        return 0
    fi
    [[ -d "$dir" ]] || die "$dir is not a directory"
    # Safety net before rm -rf: only remove directories this script created.
    if [[ ! -e "$dir/$MARKER" && -n "$(ls -A -- "$dir")" ]]; then
        die "$dir was not created by $PROG (no $MARKER file); refusing to remove it"
    fi

    if postmaster_alive "$dir/data"; then
        PG_BIN=$(find_pg_bin)
        [[ -n "$PG_BIN" ]] || die "a server is running in $dir/data but no pg_ctl was found"
        log "stopping server in $dir/data"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >&2; then
            # pg_ctl waits for postmaster.pid to vanish; a postmaster that died
            # meanwhile never removes it, so only fail if it is really still alive.
            postmaster_alive "$dir/data" && die "pg_ctl stop failed for $dir/data (server still running)"
            log "server is gone even though pg_ctl reported a failure; continuing"
        fi
    elif [[ -f "$dir/data/postmaster.pid" ]]; then
        log "server in $dir/data is not running (stale postmaster.pid)"
    fi

    rm -rf -- "$dir" || die "could not remove $dir"
    log "removed $dir"
}

cmd_halt() {
    local dir
    dir=$(abs_dir "$1")

    [[ $EUID -eq 0 ]] || die "must run as root (the server runs as user '$PG_USER' via runuser)"
    require_cluster "$dir"

    if ! postmaster_alive "$dir/data"; then
        log "server in $dir/data is not running, nothing to halt"
        return 0
    fi
    PG_BIN=$(find_pg_bin)
    [[ -n "$PG_BIN" ]] || die "a server is running in $dir/data but no pg_ctl was found"
    # Fast shutdown: open sessions are terminated and in-flight transactions rolled back,
    # as clients see it when a database server is restarted; the data stays.
    log "halting server in $dir/data (fast shutdown, data kept)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2; then
        postmaster_alive "$dir/data" && die "pg_ctl stop failed for $dir/data (server still running)"
        log "server is gone even though pg_ctl reported a failure; continuing"
    fi
    log "halted (resume with '$PROG resume $dir')"
}

cmd_resume() {
    local dir port url
    dir=$(abs_dir "$1")

    [[ $EUID -eq 0 ]] || die "must run as root (the server runs as user '$PG_USER' via runuser)"
    command -v runuser >/dev/null || die "runuser not found (package util-linux)"
    require_cluster "$dir"
    [[ -f "$dir/port" ]] || die "$dir/port is missing (was '$PROG start $dir' interrupted?)"
    port=$(<"$dir/port")
    [[ "$port" =~ ^[0-9]+$ ]] || die "$dir/port holds a bogus port: '$port'"
    PG_BIN=$(find_pg_bin)
    [[ -n "$PG_BIN" ]] || die "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/pg_ctl)"

    if postmaster_alive "$dir/data"; then
        log "server in $dir/data is already running"
    else
        # Same port as before: clients reconnect to the URL they already have. If another
        # process took the port meanwhile, that is an error here (no new port is picked).
        log "resuming server on 127.0.0.1:$port"
        if ! pg_start "$dir" "$port"; then
            [[ -f "$dir/log" ]] && tail -n 30 "$dir/log" >&2
            die "pg_ctl start failed (server log above, full log in $dir/log); clean up with '$PROG stop $dir'"
        fi
    fi
    wait_ready "$dir" "$port"

    url=$(pg_url "$port")
    log "ready: $url (data in $dir, stop with '$PROG stop $dir')"
    printf '%s\n' "$url"
}

[[ $# -eq 2 ]] || usage
case "$1" in
    start) cmd_start "$2" ;;
    stop) cmd_stop "$2" ;;
    halt) cmd_halt "$2" ;;
    resume) cmd_resume "$2" ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
