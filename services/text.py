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

__all__ = ["check_text", "is_control", "strip_controls"]

_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: Zero-width non-joiner and joiner: format characters, yet part of how names are written.
_JOINERS = frozenset({"\u200c", "\u200d"})
#: Allowed in multi-line text (descriptions): line feed and tab.
_LAYOUT = frozenset({"\n", "\t"})


def is_control(ch: str) -> bool:
    """True for a character we never store in user text (see the module docstring)."""
    return unicodedata.category(ch) in _REFUSED_CATEGORIES and ch not in _JOINERS


def check_text(value: str, field: str, *, multiline: bool = False) -> str:
    """``value`` as given, or a ValidationError naming ``field`` and the first bad character.

    :param multiline: allow line feeds and tabs (a description typed in a text area); a CR LF
        pair becomes a line feed first, so text from any platform reads the same.
    """
    if multiline:
        value = value.replace("\r\n", "\n")
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
