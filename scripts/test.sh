#!/usr/bin/env bash
# One command: install what is missing, build everything, run every test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/build.sh -DSIPD_BUILD_TESTS=ON -DSIPD_BUILD_BENCH=ON
cd build
ctest --output-on-failure --timeout 300 -j2 "$@"
