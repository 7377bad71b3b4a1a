"""Text read from files, made safe to print on a terminal.

A task or operator string is typed by whoever recorded the episode, and a file name by whoever
copied it into the store: either may hold ANSI/OSC escape sequences (colours, a new window
title, a hyperlink) or bidirectional overrides that make a terminal show something other than
what is there. Everything printed from a file goes through `printable`.
"""

from __future__ import annotations

import unicodedata

#: Unicode format characters that reorder or hide text (bidi overrides and isolates, "Trojan
#: source"); other format characters (zero-width joiners in emoji) are harmless.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: object) -> str:
    """`text` with every control character (C0, DEL, C1) and bidi control written as a visible
    escape (`\\x1b`, `\\u202e`); tabs and newlines too, so one value stays on one line."""
    out = []
    for char in str(text):
        code = ord(char)
        if char in _BIDI_CONTROLS or unicodedata.category(char) == "Cc":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
