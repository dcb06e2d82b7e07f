#!/bin/bash
# pdqhash (perceptual image hashes, safety/image_hashes.py) has no wheel on PyPI: pip builds it,
# which needs a C++ compiler and the headers of the Python that builds the venv. Install them
# with apt when they are missing (a fresh Debian has neither); otherwise do nothing.
set -euo pipefail
python=${1:-python3}
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if command -v g++ >/dev/null && [ -f "$include/Python.h" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "build-deps.sh: pdqhash needs g++ and $include/Python.h; install a C++ compiler and the Python headers" >&2
    exit 1
fi
version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
echo "build-deps.sh: installing g++ and python$version-dev (pdqhash is built from source)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ "python$version-dev" >/dev/null
