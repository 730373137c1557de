#!/usr/bin/env python3
"""Strict check of the JSON alphaspin writes, as other programs read it.

usage: strict_json.py [--lines] [--pieces TEXT] FILE|- ...

Each FILE (- : standard input) must be UTF-8 (decoded strictly: a lone 0xC3
fails) holding one JSON value, or with --lines (or a .jsonl name) one JSON value
per line.  Stricter than json.loads alone: NaN/Infinity are refused (Python
accepts them, RFC 8259 and most parsers do not) and so are strings with lone
surrogates (\\ud800), which serde or Go reject.
--pieces TEXT: the lines are tokens {"token", "bytes"} (logprobs, tokenize
--pieces): their bytes concatenate to TEXT's bytes and each token is its bytes
decoded with U+FFFD for the ill-formed parts (Python's errors="replace" replaces
maximal subparts, as Unicode recommends: a second implementation to compare with).
Prints FILE:LINE: what, and exits 1, at the first violation.
"""
import json
import os
import sys


def refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def check_strings(v):
    if isinstance(v, str):
        v.encode("utf-8")  # raises on a lone surrogate
    elif isinstance(v, list):
        for x in v:
            check_strings(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            check_strings(k)
            check_strings(x)


def parse(text):
    v = json.loads(text, parse_constant=refuse_constant)
    check_strings(v)
    return v


def main(argv):
    lines_mode, pieces, files = False, None, []
    i = 0
    while i < len(argv):
        if argv[i] == "--lines":
            lines_mode = True
        elif argv[i] == "--pieces":
            pieces = os.fsencode(argv[i + 1])  # the argument's exact bytes
            i += 1
        else:
            files.append(argv[i])
        i += 1
    if not files:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for name in files:
        data = sys.stdin.buffer.read() if name == "-" else open(name, "rb").read()
        where = "stdin" if name == "-" else name
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            print(f"{where}: not UTF-8: {e}", file=sys.stderr)
            return 1
        values = []
        if lines_mode or name.endswith(".jsonl") or pieces is not None:
            if text and not text.endswith("\n"):
                print(f"{where}: the last line has no newline", file=sys.stderr)
                return 1
            for n, line in enumerate(text.split("\n")[:-1], 1):
                try:
                    values.append(parse(line))
                except ValueError as e:
                    print(f"{where}:{n}: {e}: {line[:200]!r}", file=sys.stderr)
                    return 1
        else:
            try:
                values.append(parse(text))
            except ValueError as e:
                print(f"{where}: {e}", file=sys.stderr)
                return 1
        if pieces is not None:
            got = b""
            for n, v in enumerate(values, 1):
                b = bytes(v["bytes"])
                if v["token"] != b.decode("utf-8", "replace"):
                    print(f"{where}:{n}: token {v['token']!r} is not its bytes {list(b)} decoded with U+FFFD", file=sys.stderr)
                    return 1
                got += b
            if got != pieces:
                print(f"{where}: the tokens' bytes {got!r} are not the text {pieces!r}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
