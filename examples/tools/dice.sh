#!/usr/bin/env bash
# dice: an exec tool for toolmesh-worker, in plain bash (no network, no jq).
#
# Reads the tool input as JSON on stdin, e.g. {"count": 3, "sides": 6} (the
# worker has already validated it against the input_schema in tools.json) and
# prints {"sides": 6, "rolls": [4, 1, 6], "total": 11}. Bad values exit 1
# with one line on stderr, which becomes an is_error tool_result.
set -euo pipefail

input=$(cat)

# Extracts the integer value of "$1" from the input, or prints $2.
int_field() {
  local re="\"$1\"[[:space:]]*:[[:space:]]*(-?[0-9]+)"
  if [[ $input =~ $re ]]; then echo "${BASH_REMATCH[1]}"; else echo "$2"; fi
}

count=$(int_field count 1)
sides=$(int_field sides 6)
if (( count < 1 || count > 20 )); then
  echo "dice: count must be from 1 to 20, got $count" >&2; exit 1
fi
if (( sides < 2 || sides > 1000 )); then
  echo "dice: sides must be from 2 to 1000, got $sides" >&2; exit 1
fi

rolls=()
total=0
for ((i = 0; i < count; i++)); do
  r=$(( RANDOM % sides + 1 ))
  rolls+=("$r")
  total=$(( total + r ))
done
joined=$(IFS=,; echo "${rolls[*]}")
printf '{"sides": %d, "rolls": [%s], "total": %d}\n' "$sides" "${joined//,/, }" "$total"
