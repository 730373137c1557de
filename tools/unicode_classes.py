#!/usr/bin/env python3
"""Letters and numbers that Unicode 15.1 has and Unicode 14.0 lacks.

llama.cpp's character table (unicode-data.cpp) follows Unicode 15.1; PCRE2 10.42
(Debian 12) and this Python's unicodedata follow Unicode 14.0.  This prints the
code point ranges whose general category is L* or N* in 15.1 but not in the
running Python's tables, as the LETTERS_15 / NUMBERS_15 additions used in
src/tokenizer/bpe.c.  (Checked against PCRE2 itself: classifying every code point
with PCRE2's \\p{L} and \\p{N} gives the same difference.)

usage: python3 -m venv /tmp/uv && /tmp/uv/bin/pip install unicodedata2==15.1.0
       /tmp/uv/bin/python tools/unicode_classes.py    (with a Python whose unicodedata is 14.0)
"""
import unicodedata

import unicodedata2


def ranges(cps):
    out = []
    for c in cps:
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def main():
    print("old tables: Unicode %s, new: %s" % (unicodedata.unidata_version, unicodedata2.unidata_version))
    for major, name in (("L", "LETTERS_15"), ("N", "NUMBERS_15")):
        added = [c for c in range(0x110000)
                 if unicodedata2.category(chr(c))[0] == major and unicodedata.category(chr(c))[0] != major]
        lost = [c for c in range(0x110000)
                if unicodedata.category(chr(c))[0] == major and unicodedata2.category(chr(c))[0] != major]
        items = "".join("\\\\x{%X}" % a if a == b else "\\\\x{%X}-\\\\x{%X}" % (a, b) for a, b in ranges(added))
        print('#define %s "\\\\p{%s}%s"' % (name, major, items))
        if lost:
            print("  note: %d code points left class %s: %s" % (len(lost), major, [hex(c) for c in lost[:20]]))


if __name__ == "__main__":
    main()
