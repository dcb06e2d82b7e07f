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
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
