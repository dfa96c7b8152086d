#!/usr/bin/env bash
# python_client_test.sh: runs the Python example client
# (examples/python/toolmesh_client.py) against a live toolmesh cluster on
# loopback: toolmesh-fakeapi (its rule-driven model, no scenario),
# toolmesh-orchestrator (client and worker tokens set, SQLite in a temporary
# directory) and one toolmesh-worker serving the builtin `echo` tool.
#
# Checks: a prompt that names echo makes the client exit 0 and print the echo
# call reaching `done` and the `[completed]` outcome; the fake API rejected
# no request (GET /_fake/stats rejected_400 == 0); without the token the
# client exits 1 with UNAUTHENTICATED; bad usage exits 2.
#
# Every process it starts is stopped (SIGTERM, then SIGKILL after a bounded
# wait) and the temporary directory removed on any exit (trap EXIT). Waits
# are bounded poll loops on a condition, never fixed sleeps.
#
# The interpreter is /usr/bin/python3 on purpose: `python3` on PATH may be a
# pyenv (or venv) interpreter that lacks Debian's python3-grpcio and
# python3-protobuf packages.
#
# Usage: tests/python/python_client_test.sh BUILD_DIR   (binaries in BUILD_DIR/bin)
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
bin_dir="$1/bin"
src_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
client="$src_dir/examples/python/toolmesh_client.py"
python=/usr/bin/python3
startup_timeout_s=20
client_timeout_s=60
client_token="py-client-token"
worker_token="py-worker-token"

for binary in toolmesh-fakeapi toolmesh-orchestrator toolmesh-worker; do
  if [ ! -x "$bin_dir/$binary" ]; then
    echo "FAIL: $bin_dir/$binary is not built" >&2
    exit 1
  fi
done
if [ ! -x "$python" ]; then
  echo "FAIL: $python is missing (Debian package python3)" >&2
  exit 1
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/toolmesh-pyclient-XXXXXX")"
pids=()   # in start order; stopped in reverse order
names=()

# Stops one process: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it.
stop_process() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop_process "${pids[$i]}"
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
# A signal (ctest's timeout, ^C) ends the script through the EXIT trap too.
trap 'exit 143' TERM
trap 'exit 130' INT

# Prints the tail of every process's output, for failure messages.
dump_logs() {
  local f
  for f in "$tmp"/*.out "$tmp"/*.err "$tmp"/client*.txt; do
    [ -s "$f" ] || continue
    echo "----- ${f##*/} (last 40 lines)" >&2
    tail -n 40 "$f" >&2
  done
}

fail() {
  echo "FAIL: $*" >&2
  dump_logs
  exit 1
}

# start NAME COMMAND...: runs COMMAND in the background, stdout to
# $tmp/NAME.out and stderr to $tmp/NAME.err.
start() {
  local name="$1"
  shift
  "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pids+=("$!")
  names+=("$name")
}

# wait_for_line NAME PATTERN: waits until $tmp/NAME.out has a line matching
# the extended regex PATTERN, then prints that line. Fails when the process
# exits first or after $startup_timeout_s.
wait_for_line() {
  local name="$1" pattern="$2" pid="" i line
  for ((i = 0; i < ${#names[@]}; i++)); do
    [ "${names[$i]}" = "$name" ] && pid="${pids[$i]}"
  done
  local deadline=$((SECONDS + startup_timeout_s))
  while true; do
    line="$(grep -E -m1 "$pattern" "$tmp/$name.out" || true)"
    if [ -n "$line" ]; then
      printf '%s\n' "$line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "$name exited before printing /$pattern/"
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "$name printed no /$pattern/ within ${startup_timeout_s}s"
    sleep 0.05
  done
}

# "... listening on HOST:PORT" -> HOST:PORT
address_of() { sed -E 's/.*listening on ([^ ]+).*/\1/' <<<"$1"; }

# The fake API.
start fakeapi "$bin_dir/toolmesh-fakeapi" --listen 127.0.0.1:0
fake_url="http://$(address_of "$(wait_for_line fakeapi 'listening on ')")"

# The orchestrator.
mkdir -p "$tmp/data"
start orchestrator env ANTHROPIC_API_KEY=test-api-key-do-not-log \
  TOOLMESH_CLIENT_TOKEN="$client_token" TOOLMESH_WORKER_TOKEN="$worker_token" \
  "$bin_dir/toolmesh-orchestrator" --listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --data-dir "$tmp/data" \
  --anthropic-base-url "$fake_url"
grpc_address="$(address_of "$(wait_for_line orchestrator '^grpc listening on ')")"
wait_for_line orchestrator '^http listening on ' >/dev/null

# One worker serving the builtin echo tool.
cat >"$tmp/tools.json" <<'EOF'
[
  {
    "name": "echo",
    "description": "Return the given message unchanged.",
    "input_schema": {
      "type": "object",
      "properties": {"message": {"type": "string", "minLength": 1}},
      "required": ["message"],
      "additionalProperties": false
    },
    "executor": {"type": "builtin", "name": "echo"}
  }
]
EOF
start worker env TOOLMESH_WORKER_TOKEN="$worker_token" \
  "$bin_dir/toolmesh-worker" --orchestrator "$grpc_address" \
  --tools "$tmp/tools.json" --concurrency 2 --id py-worker-1
wait_for_line worker '^worker py-worker-1 connected to ' >/dev/null

# run_client OUTPUT_NAME ARGS...: runs the client with a bounded time, without
# the token variables of this environment; sets $rc.
run_client() {
  local name="$1"
  shift
  set +e
  env -u TOOLMESH_CLIENT_TOKEN -u TOOLMESH_ORCHESTRATOR \
    timeout --kill-after=5 "$client_timeout_s" \
    "$python" "$client" "$@" >"$tmp/$name.txt" 2>"$tmp/$name-stderr.txt"
  rc=$?
  set -e
}

# 1. The task: every tool the worker serves (no --tool), a prompt naming echo.
#    --wait-for-workers: the worker's "connected" line comes before the
#    orchestrator lists it; the client polls ListWorkers until it does.
run_client client --orchestrator "$grpc_address" --token "$client_token" \
  --wait-for-workers "$startup_timeout_s" \
  --prompt "Please use the echo tool to echo the message: hello from Python"
[ "$rc" -eq 0 ] || fail "the client exited $rc, want 0 (completed)"
grep -Eq '^task [^ ]+ submitted to ' "$tmp/client.txt" ||
  fail "no 'task ... submitted' line"
grep -Eq '^\[tool\] echo [^ ]+ pending( |$)' "$tmp/client.txt" ||
  fail "no line shows the echo call pending"
grep -Eq '^\[tool\] echo [^ ]+ running on py-worker-1( |$)' "$tmp/client.txt" ||
  fail "no line shows the echo call running on py-worker-1"
grep -Eq '^\[tool\] echo [^ ]+ done( |$)' "$tmp/client.txt" ||
  fail "no line shows the echo call done"
grep -Eq '^\[turn 1\] tool_use' "$tmp/client.txt" ||
  fail "no line shows turn 1 ending with tool_use"
tail -n 1 "$tmp/client.txt" | grep -Eq '^\[completed\] stop_reason end_turn(;|$)' ||
  fail "the last line is not '[completed] stop_reason end_turn ...'"
if grep -Eq '^\[tool\] .* error' "$tmp/client.txt"; then
  fail "a tool call ended in error"
fi
echo "ok: the client printed the echo call done and the completed outcome"

# 2. The fake API accepted every request the orchestrator sent.
rejected="$("$python" - "$fake_url/_fake/stats" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    stats = json.load(response)
print(stats["rejected_400"], stats["requests"])
EOF
)" || fail "GET $fake_url/_fake/stats failed"
read -r rejected_400 requests <<<"$rejected"
[ "$rejected_400" = 0 ] || fail "the fake API rejected $rejected_400 request(s) with 400"
[ "$requests" -ge 2 ] || fail "the fake API saw $requests request(s), want >= 2"
echo "ok: /_fake/stats rejected_400 = 0 over $requests requests"

# 3. The token is really sent: without it the orchestrator refuses the call.
run_client client-no-token --orchestrator "$grpc_address" --prompt "hello"
[ "$rc" -eq 1 ] || fail "without a token the client exited $rc, want 1"
grep -q 'UNAUTHENTICATED' "$tmp/client-no-token-stderr.txt" ||
  fail "without a token stderr does not say UNAUTHENTICATED"
echo "ok: without the token the client exits 1 with UNAUTHENTICATED"

# 4. Bad usage exits 2 without contacting anyone.
run_client client-usage --orchestrator "$grpc_address"
[ "$rc" -eq 2 ] || fail "without --prompt the client exited $rc, want 2"
run_client client-usage --orchestrator no-port --prompt x
[ "$rc" -eq 2 ] || fail "with --orchestrator no-port the client exited $rc, want 2"
echo "ok: bad usage exits 2"

# 5. Secrets never reach a log or an error message: no output file of any
# process (the daemons' logs, the client's stdout and stderr) holds the API
# key or a token.
for secret in "$client_token" "$worker_token" "test-api-key-do-not-log"; do
  if grep -rlF -- "$secret" "$tmp" >/dev/null 2>&1; then
    fail "a log in $tmp contains a secret: $(grep -rlF -- "$secret" "$tmp" | head -3 | tr '\n' ' ')"
  fi
done
echo "ok: no log holds the API key or a token"

echo "PASS: python_client"
