"""User text we store: control characters refused in what a user types, removed from what a
browser sends on the user's behalf.

A control character stored in a name reaches every screen, log line and export that shows it:
NUL ends strings in C libraries, CR/LF forge log lines, ESC drives terminals, and bidi
overrides (``U+202E``) make a name read backwards. Refused: the categories Cc (controls),
Cf (invisible format characters), Cs (lone surrogates, which MongoDB cannot store as UTF-8),
Zl and Zp (line and paragraph separators), except the zero-width joiner and non-joiner, which
emoji sequences and Persian or Indic names need.
"""

from __future__ import annotations

import unicodedata

from errors import ValidationError

__all__ = ["REFUSED_BMP", "check_text", "is_control", "refused_class", "strip_controls"]

_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Zero-width non-joiner and joiner: format characters, yet part of how names are written.
_JOINERS = frozenset({"\u200c", "\u200d"})
#: Allowed in multi-line text (descriptions): line feed and tab.
_LAYOUT = frozenset({"\n", "\t"})


#: The ranges of the Basic Multilingual Plane that :func:`is_control` refuses, for the request
#: schemas' patterns (tests/test_text.py checks them against unicodedata). The few refused
#: characters beyond it (format characters of historic scripts and tags) only is_control knows.
REFUSED_BMP = (
    (0x00, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200B),
    (0x200E, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)


def refused_class(*, multiline: bool = False) -> str:
    """A regex character class (Python and JSON Schema alike) of the refused BMP characters
    but surrogates; with ``multiline``, line feed and tab are let through."""
    parts = []
    for low, high in REFUSED_BMP:
        if low == 0xD800:
            # Surrogates: a pattern naming them is invalid for Rust's and Go's regex engines
            # (JSON Schema validators); a JSON string cannot carry a lone one validly anyway.
            continue
        if multiline and low == 0x00:
            # Tab and line feed are layout in a description; a CR of a CR LF becomes a line feed.
            parts.append("\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f")
            continue
        parts.append(f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}")
    return "[" + "".join(parts) + "]"


def is_control(ch: str) -> bool:
    """True for a character we never store in user text (see the module docstring)."""
    return unicodedata.category(ch) in _REFUSED_CATEGORIES and ch not in _JOINERS


def check_text(value: str, field: str, *, multiline: bool = False) -> str:
    """``value`` as given, or a ValidationError naming ``field`` and the first bad character.

    :param multiline: allow line feeds and tabs (a description typed in a text area); a CR LF
        pair or a lone CR becomes a line feed first, so text from any platform reads the same.
    """
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")  # CR LF, or a lone CR
    for position, ch in enumerate(value):
        if is_control(ch) and not (multiline and ch in _LAYOUT):
            raise ValidationError(
                f"'{field}' must not contain control characters (found U+{ord(ch):04X} at "
                f"position {position})",
                details={"field": field, "character": f"U+{ord(ch):04X}",
                         "position": position})
    return value


def strip_controls(value: str) -> str:
    """``value`` without the characters :func:`check_text` refuses (file names a browser sent)."""
    return "".join(ch for ch in value if not is_control(ch))
