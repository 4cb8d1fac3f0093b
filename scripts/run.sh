#!/usr/bin/env bash
# One command: install what is missing, build, run sipd in the foreground with the
# default config (etc/sipd.cfg). Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/build.sh -DSIPD_BUILD_TESTS=OFF -DSIPD_BUILD_BENCH=OFF
exec build/sipd/sipd -f "${SIPD_CONFIG:-etc/sipd.cfg}"
