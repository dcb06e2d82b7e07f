#!/usr/bin/env bash
# The browser tests (tests/browser) drive Debian's Chromium through Playwright: Playwright's own
# browser builds are downloaded from outside the package registries, which these machines cannot
# reach, so `playwright install` is never run. Installs the `chromium` package when it is missing.
set -euo pipefail
chromium=/usr/bin/chromium
if [ -x "$chromium" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "$chromium is missing: install Debian's chromium (apt-get install chromium) as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's chromium for the browser tests" >&2
# With its recommended packages (fonts-liberation: text in screenshots). The package lists may be
# missing or stale on a fresh machine: update them only when the install fails.
if ! apt-get install -y chromium; then
  apt-get update
  apt-get install -y chromium
fi
test -x "$chromium"
