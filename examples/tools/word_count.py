#!/usr/bin/env python3
"""word_count: an exec tool for toolmesh-worker.

Reads the tool input as JSON on stdin ({"text": "...", "top": 3}) and prints
the result as JSON on stdout: counts of lines, words and characters and the
most frequent words. Invalid input exits 1 with one line on stderr, which the
worker turns into an is_error tool_result.
"""

import collections
import json
import re
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
    top = data.get("top", 3)
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 50:
        print("word_count: input.top must be an integer from 0 to 50",
              file=sys.stderr)
        return 1

    text = data["text"]
    words = re.findall(r"[^\W_]+(?:['\u2019-][^\W_]+)*", text.lower())
    counts = collections.Counter(words)
    result = {
        "lines": len(text.splitlines()),
        "words": len(words),
        "characters": len(text),
        "unique_words": len(counts),
        "top_words": [{"word": w, "count": c}
                      for w, c in sorted(counts.items(),
                                         key=lambda kv: (-kv[1], kv[0]))[:top]],
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
