#!/usr/bin/env bash
# Builds everything and runs every test on this machine (installing packages first), then prints
# one line "N passed, M failed[, K skipped]" counted over Catch2 test cases, and exits non-zero on
# any failure. A test binary that crashes, times out or fails to build counts as one failure.
set -uo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh || { echo "0 passed, 1 failed (package setup failed)"; exit 1; }

JOBS="${KILN_BAZEL_JOBS:-$(nproc)}"
echo "== bazel build //... (jobs=$JOBS)"
bazel build //... --jobs="$JOBS" 2>&1 | grep -v -E "^(Loading|Analyzing|INFO: From|\[)" | tail -40
build_rc=${PIPESTATUS[0]}

echo "== bazel test //..."
bazel test //... --jobs="$JOBS" --keep_going --test_output=errors 2>&1 \
  | tee /tmp/kiln-test-output.$$ | grep -E "PASSED|FAILED|TIMEOUT|NO STATUS|SKIPPED|ERROR" | tail -200

passed=0 failed=0 skipped=0
logs_dir="$(bazel info bazel-testlogs 2>/dev/null)"
for target in $(bazel query 'tests(//...)' 2>/dev/null); do
  path="${target#//}"
  path="${path/://}"
  log="$logs_dir/$path/test.log"
  status_line=$(grep -E "^$target +" /tmp/kiln-test-output.$$ | tail -1)
  summary=""
  [ -f "$log" ] && summary=$(grep -a "^KILN_TEST_SUMMARY" "$log" | tail -1)
  if [ -z "$summary" ] || echo "$status_line" | grep -q -E "FAILED TO BUILD|NO STATUS|TIMEOUT"; then
    echo "FAILED (no test summary): $target ${status_line##* }"
    failed=$((failed + 1))
    continue
  fi
  p=$(echo "$summary" | sed -E 's/.*passed=([0-9]+).*/\1/')
  f=$(echo "$summary" | sed -E 's/.*failed=([0-9]+).*/\1/')
  s=$(echo "$summary" | sed -E 's/.*skipped=([0-9]+).*/\1/')
  if echo "$status_line" | grep -q "FAILED" && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  grep -a "^SKIPPED: " "$log" | sed "s|^|  $target: |" || true
done
rm -f /tmp/kiln-test-output.$$

if [ "$build_rc" -ne 0 ]; then
  echo "FAILED: bazel build //... (exit $build_rc)"
  failed=$((failed + 1))
fi

line="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
