#!/usr/bin/env bash
# Runs scripts/demo non-interactively against already-built binaries
# (--no-build --bin-dir BUILD_DIR/bin) and checks what a newcomer relies on:
#   1. a full run exits 0 and its summary shows the task completed, no
#      request rejected by the fake API, a retry, the deferred web_search
#      reconciled, and tools run on both workers; afterwards no process that
#      mentions the demo's temporary directory is left and the directory is
#      gone;
#   2. SIGTERM while the task runs: exit 143, same cleanliness;
#   3. --live without ANTHROPIC_API_KEY: exit 2, one line on stderr, nothing
#      started.
# The demo's temporary directory is created under a private TMPDIR, so
# leftover processes are found by scanning /proc for that path.
#
# Usage: tests/demo/demo_test.sh BUILD_DIR     (ctest: demo_script)
set -uo pipefail

build_dir=${1:?usage: demo_test.sh BUILD_DIR}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export TMPDIR=$work/tmp
mkdir "$TMPDIR"
printf '%s\n' "$TMPDIR" >"$work/pattern"
demo=(bash "$root/scripts/demo" --no-build --bin-dir "$build_dir/bin")

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# expect_line FILE ERE DESCRIPTION: FILE has a line matching ERE.
expect_line() {
  if grep -Eq -- "$2" "$1"; then pass "$3"; else fail "$3 (no line matching /$2/)"; fi
}

# "PID: command line" of each process whose command line mentions $TMPDIR.
# The pattern is read from a file so that grep does not find itself.
leftovers() {
  local f pid
  for f in $(grep -lsF -f "$work/pattern" /proc/[0-9]*/cmdline); do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    [ "$pid" = "$$" ] && continue
    printf '%s: %s\n' "$pid" "$( { tr '\0' ' ' <"$f"; } 2>/dev/null)"
  done
}

expect_clean() {
  local left
  left=$(leftovers)
  if [ -z "$left" ]; then pass "$1: no demo process left"; else
    fail "$1: processes left behind:"; echo "$left"
    # Do not leave them to the next test either.
    while read -r pid _; do kill -KILL "${pid%:}" 2>/dev/null; done <<<"$left"
  fi
  if [ -z "$(ls -A "$TMPDIR")" ]; then pass "$1: temporary directory removed"; else
    fail "$1: left in TMPDIR: $(ls -A "$TMPDIR")"; rm -rf "${TMPDIR:?}"/*
  fi
}

show_on_failure() {
  [ "$failures" -eq 0 ] && return
  echo "---- $1 stdout"; cat "$2"; echo "---- $1 stderr"; cat "$3"; echo "----"
}

# ---------------------------------------------------------------- 1. full run
out=$work/run.out err=$work/run.err
timeout 100 "${demo[@]}" </dev/null >"$out" 2>"$err"
rc=$?
before=$failures
if [ "$rc" -eq 0 ]; then pass "full run exits 0"; else fail "full run exited $rc"; fi
expect_line "$out" '^task +task_[0-9a-z]+: completed \(stop_reason end_turn\)$' \
  "summary: task completed"
expect_line "$out" '^turns +2$' "summary: two turns"
expect_line "$out" '^retries +[1-9][0-9]* \(turn 1 attempt 1: overloaded_error' \
  "summary: the mid-stream error was retried"
expect_line "$out" 'API \(server\): web_search done \(deferred: requested in turn 1, reconciled in turn 2\)' \
  "summary: deferred server tool reconciled"
expect_line "$out" '^( +|tools +)w1: (.*, )?word_count done' "summary: word_count (Python) done on w1"
expect_line "$out" '^( +|tools +)w2: (.*, )?roll_dice done' "summary: roll_dice (bash) done on w2"
expect_line "$out" 'echo done' "summary: builtin echo done"
expect_line "$out" '^workers used +2 \(w1, w2\)$' "summary: tools ran on two workers"
expect_line "$out" '^fake API +requests=3 rejected=0 .*faults: .*sse_error=1' \
  "summary: three requests, none rejected, one sse_error"
expect_line "$out" 'search for where the pangram comes from, all at the same time\.' \
  "live progress: the turn's text was streamed"
expect_line "$out" '^logs +/' "summary: where the logs are"
expect_clean "full run"
[ "$failures" -gt "$before" ] && show_on_failure "full run" "$out" "$err"

# ------------------------------------------------------- 2. SIGTERM mid-task
out=$work/term.out err=$work/term.err
before=$failures
"${demo[@]}" </dev/null >"$out" 2>"$err" &
pid=$!
deadline=$((SECONDS + 60))
until grep -q '^\[turn 1 attempt 2\]' "$out" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ] ||
      ! kill -0 "$pid" 2>/dev/null; do
  sleep 0.02
done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
if [ "$rc" -eq 143 ]; then pass "SIGTERM during the task: exit 143"; else
  fail "SIGTERM during the task: exit $rc (want 143; 0 means the demo ended before the signal)"
fi
expect_clean "SIGTERM"
[ "$failures" -gt "$before" ] && show_on_failure "SIGTERM run" "$out" "$err"

# ------------------------------------------------ 3. --live without a key
out=$work/live.out err=$work/live.err
before=$failures
env -u ANTHROPIC_API_KEY "${demo[@]}" --live </dev/null >"$out" 2>"$err"
rc=$?
if [ "$rc" -eq 2 ]; then pass "--live without key: exit 2"; else fail "--live without key: exit $rc"; fi
if [ "$(wc -l <"$err")" -eq 1 ] && grep -q 'ANTHROPIC_API_KEY' "$err" && [ ! -s "$out" ]; then
  pass "--live without key: one line on stderr naming ANTHROPIC_API_KEY"
else
  fail "--live without key: want one stderr line naming ANTHROPIC_API_KEY"
fi
expect_clean "--live without key"
[ "$failures" -gt "$before" ] && show_on_failure "--live run" "$out" "$err"

echo "demo_test: $failures failure(s)"
[ "$failures" -eq 0 ]
