"""services/text.py: which characters user text may hold (issue 12, break 3)."""

from __future__ import annotations

import pytest

from errors import ValidationError
from services import text

#: Each refused character, by what it does where the name is shown.
CONTROLS = {
    "NUL": "\x00", "CR": "\r", "LF": "\n", "CR LF": "\r\n", "tab": "\t", "ESC": "\x1b[31m",
    "DEL": "\x7f", "NEL (C1)": "\x85", "bidi override": "\u202e", "zero-width space": "\u200b",
    "BOM": "\ufeff", "soft hyphen": "\u00ad", "line separator": "\u2028",
    "paragraph separator": "\u2029", "lone surrogate": "\ud800",
}
#: Text that looks unusual and is fine: joiners in emoji and Persian, accents, CJK, symbols.
ALLOWED = ["Zoë", "Ảnh gia đình", "山田 太郎", "👨\u200d👩\u200d👧", "می\u200cخواهم",
           "O'Brien & Co. [2024]", "a\u00a0b"]


@pytest.mark.parametrize("bad", CONTROLS.values(), ids=CONTROLS.keys())
def test_control_characters_are_refused_naming_the_field(bad):
    with pytest.raises(ValidationError) as raised:
        text.check_text(f"Bob{bad}Smith", "name")
    assert raised.value.details["field"] == "name"
    assert raised.value.details["position"] == 3
    assert raised.value.details["character"] == f"U+{ord(bad[0]):04X}"
    assert "'name'" in raised.value.message


@pytest.mark.parametrize("good", ALLOWED)
def test_ordinary_text_is_kept_as_it_is(good):
    assert text.check_text(good, "name") == good
    assert text.strip_controls(good) == good


def test_multiline_text_keeps_line_feeds_and_tabs_only():
    assert text.check_text("Day 1\n\tbeach\r\nDay 2\rend", "d", multiline=True) == (
        "Day 1\n\tbeach\nDay 2\nend")
    for bad in ("a\x00b", "a\x1bb", "a\u2028b"):
        with pytest.raises(ValidationError):
            text.check_text(bad, "d", multiline=True)


def test_strip_controls_cuts_out_what_check_text_refuses():
    assert text.strip_controls("a\x00b\r\nc\x1b[0m\u202ed\ud800.jpg") == "abc[0md.jpg"


def test_the_schemas_table_of_refused_characters_matches_is_control():
    table = {cp for low, high in text.REFUSED_BMP for cp in range(low, high + 1)}
    scanned = {cp for cp in range(0x10000) if text.is_control(chr(cp))}
    assert table == scanned
