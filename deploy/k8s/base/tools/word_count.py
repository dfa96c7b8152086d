#!/usr/bin/env python3
"""word_count: an example exec tool for toolmesh-worker in Kubernetes.

Reads the tool input as JSON on stdin ({"text": "..."}) and prints
{"lines": N, "words": N, "characters": N} on stdout. Invalid input exits 1
with one line on stderr, which the worker turns into an is_error result.
"""

import json
import sys


def main() -> int:
    try:
        data = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"word_count: input is not JSON: {e}", file=sys.stderr)
        return 1
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        print("word_count: input.text must be a string", file=sys.stderr)
        return 1
    text = data["text"]
    json.dump({"lines": len(text.splitlines()), "words": len(text.split()),
               "characters": len(text)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
