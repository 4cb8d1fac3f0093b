#!/usr/bin/env bash
# One command: install what is missing, build everything, check the formatting, run every
# test (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/build.sh -DSIPD_BUILD_TESTS=ON -DSIPD_BUILD_BENCH=ON
cmake --build build --target format-check
cd build
ctest --output-on-failure --timeout 300 -j2 "$@"
