#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.cc) for N executions each, with
# AddressSanitizer and UndefinedBehaviorSanitizer, starting from the seed corpora.
#
#   bench/fuzz.sh [EXECUTIONS] [TARGET...]     default: 10000000 executions, every target
#   FUZZ_MAX_TIME=SECONDS bench/fuzz.sh ...    also stop each target after SECONDS
#   FUZZ_JOBS=2 bench/fuzz.sh ...              run two targets at a time (default 1)
#
# Each target has its own -max_len (max_len_for below): the largest input that reaches
# every limit check of its parser without letting libFuzzer grow inputs far beyond what
# the parser reads (the old 64 KiB for every target made inputs, and runs, large).
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

max_len_for() {
  case "$1" in
    mi_arguments|fifo_request) echo 4096 ;;     # line protocols (FIFO lines, arguments)
    grpc_request) echo 4096 ;;                  # the target's limits: 8 args, 32-byte names
    config) echo 8192 ;;                        # a config file with several modparams
    datagram_request) echo 8192 ;;              # one MI datagram (the size limit is a test)
    xmlrpc_request) echo 20480 ;;               # past the 16 KiB HTTP head limit
    sip_register) echo 8192 ;;                  # a REGISTER with many Contacts (UDP MTU ~1.5K)
    sip_proxy) echo 8192 ;;                     # a few steps of messages of a call
    sip_stream) echo 8192 ;;                    # past the target's 2 KiB message limit
    typed_request|usrloc_mi|core_mi) echo 4096 ;;  # one request message / one argument list
    jsonrpc_request) echo 8192 ;;               # a batch of several calls
    *) echo 8192 ;;
  esac
}

run_target() {
  local t=$1 start
  mkdir -p "build-fuzz/corpus/$t"
  start=$(date +%s)
  local ok=yes
  if ! "build-fuzz/tests/fuzz/${t}_fuzzer" -runs="$runs" -max_total_time="${FUZZ_MAX_TIME:-0}" \
      -max_len="$(max_len_for "$t")" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build-fuzz/crash-$t-" \
      "build-fuzz/corpus/$t" "tests/fuzz/corpus/$t" > "build-fuzz/$t.log" 2>&1; then
    ok=no
  fi
  {
    echo "== $t: $runs executions, -max_len=$(max_len_for "$t"): $(( $(date +%s) - start )) s"
    [ "$ok" = yes ] || echo "!! $t failed: see build-fuzz/$t.log"
    grep -aE "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|cov:" \
      "build-fuzz/$t.log" | tail -4
  } > "build-fuzz/$t.summary"
  cat "build-fuzz/$t.summary"
  [ "$ok" = yes ]
}

status=0
jobs=${FUZZ_JOBS:-1}
pids=()
for t in "${targets[@]}"; do
  run_target "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
