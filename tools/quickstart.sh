#!/usr/bin/env bash
# The main job, end to end, on the service path: start kilnd (defaults, a fresh state directory
# under runs/), prepare a byte-level dataset from the license texts every Debian machine has, submit
# configs/quickstart.yaml (a small GPT, two data-parallel workers) with `kiln submit --follow`,
# check that the loss fell from ~5.5 to well under 2.5, show where the logs and checkpoint are,
# generate text from the trained model, and stop kilnd (also on errors).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
echo "== building"
bazel build --jobs="${KILN_BAZEL_JOBS:-2}" //scheduler:kilnd //worker:kiln-worker \
  //worker:kiln-train //worker:kiln-data //client/cli:kiln 2>&1 | grep -E "ERROR|error:" || true
BIN=bazel-bin
for b in scheduler/kilnd worker/kiln-worker worker/kiln-train worker/kiln-data client/cli/kiln; do
  [ -x "$BIN/$b" ] || { echo "quickstart: $BIN/$b was not built" >&2; exit 1; }
done

echo "== preparing data from /usr/share/common-licenses"
mkdir -p data/quickstart runs
"$BIN/worker/kiln-data" prepare --tokenizer byte /usr/share/common-licenses/* --out data/quickstart

# kilnd with its defaults (it launches bazel-bin/worker/kiln-worker, found next to itself), on
# 127.0.0.1:7070 unless that port is taken, then on a free one; its state in a fresh directory.
STATE="$(mktemp -d "$PWD/runs/kilnd.XXXXXX")"
KILND_PID=""
stop_kilnd() {
  if [ -n "$KILND_PID" ] && kill -0 "$KILND_PID" 2>/dev/null; then
    echo "== stopping kilnd (pid $KILND_PID)"
    kill -TERM "$KILND_PID"
    wait "$KILND_PID" || true
  fi
}
trap stop_kilnd EXIT
trap 'exit 130' INT TERM

# The job needs two worker slots; kilnd offers one per CPU core.
SLOTS=()
if [ "$(nproc)" -lt 2 ]; then SLOTS=(--slots 2); fi
# kilnd runs in a session of its own (setsid execs it in place: same pid, still our child), so
# that Ctrl-C reaches this script and the CLI but not kilnd, which then gets exactly one SIGTERM
# from stop_kilnd and drains: the workers checkpoint and stop. (A second signal would make kilnd
# kill them at once.)
start_kilnd() {  # $1: listen address
  rm -f "$STATE/ports"
  setsid "$BIN/scheduler/kilnd" --listen "$1" --state-dir "$STATE" --port-file "$STATE/ports" \
    "${SLOTS[@]}" >>"$STATE/kilnd.log" 2>&1 &
  KILND_PID=$!
  for _ in $(seq 200); do
    if [ -s "$STATE/ports" ]; then return 0; fi
    if ! kill -0 "$KILND_PID" 2>/dev/null; then wait "$KILND_PID" || true; KILND_PID=""; return 1; fi
    sleep 0.05
  done
  return 1
}
echo "== starting kilnd (state in $STATE)"
if ! start_kilnd 127.0.0.1:7070; then
  echo "   127.0.0.1:7070 is taken; using a free port"
  start_kilnd 127.0.0.1:0 || { echo "quickstart: kilnd did not start:" >&2; cat "$STATE/kilnd.log" >&2; exit 1; }
fi
PORT="$(sed -n 's/^grpc=//p' "$STATE/ports")"
export KILN_SERVER="127.0.0.1:$PORT"
echo "   kilnd serves on $KILN_SERVER (pid $KILND_PID); KILN_SERVER=$KILN_SERVER"

KILN="$BIN/client/cli/kiln"
# One line per requested field of a `kiln ... --json` document on stdin, e.g. jobs.0.id.
json_fields() {
  /usr/bin/python3 -c '
import json, sys
doc = json.load(sys.stdin)
for path in sys.argv[1:]:
    v = doc
    for key in path.split("."):
        v = v[int(key)] if isinstance(v, list) else v.get(key, "")
    print(v)' "$@"
}

echo "== kiln submit -f configs/quickstart.yaml --follow"
"$KILN" nodes
rc=0
"$KILN" submit -f configs/quickstart.yaml --follow || rc=$?
if ! kill -0 "$KILND_PID" 2>/dev/null; then
  wait "$KILND_PID" || true
  KILND_PID=""
  echo "quickstart: FAILED: kilnd exited during the run; the end of $STATE/kilnd.log:" >&2
  tail -n 20 "$STATE/kilnd.log" >&2
  exit 1
fi
# This kilnd's state directory is new: the job is its only one.
JOB="$("$KILN" list --json | json_fields jobs.0.id)" || JOB=""
[ -n "$JOB" ] || { echo "quickstart: FAILED: kilnd has no job" >&2; exit 1; }
mapfile -t INFO < <("$KILN" status "$JOB" --json |
  json_fields state reason progress.loss log_dir last_checkpoint.path)
if [ "$rc" -ne 0 ]; then
  echo "quickstart: FAILED: $JOB ended ${INFO[0]}: ${INFO[1]}" >&2
  echo "  logs: ${INFO[3]}" >&2
  exit 1
fi
FIRST="$("$KILN" metrics "$JOB" --csv | sed -n 2p | cut -d, -f3)"
LOSS="${INFO[2]}"
printf "== %s: loss %.4f at step 1, %.4f at the last step\n" "$JOB" "$FIRST" "$LOSS"
if ! /usr/bin/python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 2.5 else 1)" "$LOSS"; then
  echo "quickstart: FAILED: the final loss $LOSS is not under 2.5 (it starts near 5.5)" >&2
  exit 1
fi
CKPT="${INFO[4]}"
echo "   logs:       ${INFO[3]} (a file per rank; or: kiln logs $JOB)"
echo "   checkpoint: $CKPT"

echo "== sampling from the trained model"
"$BIN/worker/kiln-train" configs/quickstart.yaml --sample-only --resume "$CKPT" \
  --prompt "This program is free software" --top-k 8 --temperature 0.8

stop_kilnd
echo "== done: kilnd's state (jobs, logs, checkpoints) is kept in $STATE"
