#!/usr/bin/env bash
# The whole suite with a throwaway PostgreSQL cluster beside it, stopped however pytest ends.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
pgdir=$(mktemp -d /tmp/keyhold-pg.XXXXXX)
rmdir "$pgdir"
trap 'scripts/pg-test-cluster.sh stop "$pgdir" >/dev/null 2>&1 || true' EXIT
KEYHOLD_TEST_PG_URL=$(scripts/pg-test-cluster.sh start "$pgdir")
export KEYHOLD_TEST_PG_URL
echo "PostgreSQL for tests: $KEYHOLD_TEST_PG_URL" >&2
set +e
# Test files run in parallel, one per worker at a time (each file's servers are its own):
# most of the suite waits on servers and sockets, so one worker more than there are cores keeps
# both cores busy.
# KEYHOLD_TEST_WORKERS=0 runs it in this process; more than four would crowd the cluster.
workers=${KEYHOLD_TEST_WORKERS:-$(( $(nproc) + 1 ))}
[ "$workers" -gt 4 ] && workers=4
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
