#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.cc) for N executions each, with
# AddressSanitizer and UndefinedBehaviorSanitizer, starting from the seed corpora.
#
#   bench/fuzz.sh [EXECUTIONS] [TARGET...]     default: 10000000 executions, every target
#   FUZZ_MAX_TIME=SECONDS bench/fuzz.sh ...    also stop each target after SECONDS
#
# Builds with clang into build-fuzz/ (installs clang through scripts/bootstrap.sh fuzz).
# New inputs go to build-fuzz/corpus/<target>/ (the committed seeds stay as they are); a
# crash leaves its input in build-fuzz/crash-<target>-* and makes the script fail. The
# last lines of each run (executions, exec/s, coverage) are printed for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10000000}
shift || true
scripts/bootstrap.sh fuzz
cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIPD_FUZZ=ON \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DSIPD_BUILD_BENCH=OFF >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.cc; do
    t=$(basename "$f" .cc)
    targets+=("${t#fuzz_}")
  done
fi
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]/%/_fuzzer}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  echo "== $t: $runs executions"
  start=$(date +%s)
  if ! "build-fuzz/tests/fuzz/${t}_fuzzer" -runs="$runs" -max_total_time="${FUZZ_MAX_TIME:-0}" \
      -max_len=65536 -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/crash-$t-" \
      "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" > "build-fuzz/$t.log" 2>&1; then
    echo "!! $t failed: see build-fuzz/$t.log"
    status=1
  fi
  echo "   $(( $(date +%s) - start )) s"
  grep -aE "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov:" \
    "build-fuzz/$t.log" | tail -4
done
exit $status
