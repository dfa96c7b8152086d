#!/usr/bin/env bash
# The deploy manifest check (ctest: deploy_manifests). Works offline once
# `npm ci` has run in tests/deploy (scripts/test does it).
#
# 1. Renders with `kubectl kustomize` deploy/k8s/base, every overlay under
#    deploy/k8s/overlays/, and every variant under tests/deploy/variants/
#    (overlays with optional components switched on); a render that fails
#    fails the check.
# 2. Validates every rendered object, plus deploy/k8s/base/secret.example.yaml,
#    with check.mjs: kubernetes-models' schema validators, kubernetes-types
#    typed literals under tsc --strict, toolmesh's pod rules.
# 3. Negative cases: each tests/deploy/bad/CASE/ is rendered and must FAIL
#    check.mjs with exactly the problems its `expect` file describes (one
#    regular expression per line; every problem line must match one, each
#    must match at least one). This proves the check catches a misspelled
#    field, a wrongly typed field and a too-short worker grace period.
#
# Prints one line per case and `N passed, N failed`; exits 1 if any failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
k8s=$root/deploy/k8s

for tool in kubectl node; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check.sh: $tool not found (scripts/deps installs it)" >&2
    exit 1
  fi
done
if [ ! -d "$here/node_modules/kubernetes-models" ] ||
   [ ! -d "$here/node_modules/kubernetes-types" ] ||
   [ ! -d "$here/node_modules/typescript" ] ||
   [ ! -d "$here/node_modules/yaml" ]; then
  echo "check.sh: run \`npm ci\` in $here first (scripts/test does)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

# 1 + 2: everything we ship renders and validates.
targets=("$k8s/base")
for d in "$k8s"/overlays/*/ "$here"/variants/*/; do
  [ -f "$d/kustomization.yaml" ] && targets+=("${d%/}")
done
rendered=()
for dir in "${targets[@]}"; do
  name=${dir#"$root"/}
  out="$tmp/$(echo "$name" | tr '/' '_').yaml"
  if kubectl kustomize "$dir" >"$out" 2>"$tmp/err"; then
    pass "render $name"
    rendered+=("$out")
  else
    fail "render $name: $(tr '\n' ' ' <"$tmp/err")"
  fi
done
cp "$k8s/base/secret.example.yaml" "$tmp/secret.example.yaml"
rendered+=("$tmp/secret.example.yaml")
if node "$here/check.mjs" "${rendered[@]}" >"$tmp/out" 2>&1; then
  pass "validate $(grep -o '[0-9]* objects in [0-9]* file(s)' "$tmp/out")"
else
  cat "$tmp/out"
  fail "validate the rendered manifests"
fi

# 3: the check fails where it must, and for the expected reasons only.
for dir in "$here"/bad/*/; do
  dir=${dir%/}
  name=bad/$(basename "$dir")
  if ! kubectl kustomize "$dir" >"$tmp/bad.yaml" 2>"$tmp/err"; then
    fail "$name: does not render: $(tr '\n' ' ' <"$tmp/err")"
    continue
  fi
  node "$here/check.mjs" "$tmp/bad.yaml" >"$tmp/out" 2>&1
  rc=$?
  if [ "$rc" -ne 1 ]; then
    cat "$tmp/out"
    fail "$name: check.mjs exited $rc, expected 1"
    continue
  fi
  grep -E '^\[(schema|types|policy)\] ' "$tmp/out" >"$tmp/problems" || true
  grep -vE '^[[:space:]]*(#|$)' "$dir/expect" >"$tmp/expect"
  ok=1
  while IFS= read -r re; do
    if ! grep -qE -- "$re" "$tmp/problems"; then
      echo "  no problem matches: $re"
      ok=0
    fi
  done <"$tmp/expect"
  while IFS= read -r line; do
    if ! printf '%s\n' "$line" | grep -qE -f "$tmp/expect"; then
      echo "  unexpected problem: $line"
      ok=0
    fi
  done <"$tmp/problems"
  if [ "$ok" = 1 ] && [ -s "$tmp/problems" ]; then
    pass "$name is rejected: $(wc -l <"$tmp/problems") expected problem(s)"
  else
    cat "$tmp/out"
    fail "$name"
  fi
done

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
