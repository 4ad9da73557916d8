"""Values and names at the unit-file boundary, called directly: a line break or NUL can never reach a
unit file (validation usually refuses them earlier; this is the last guard), and only real unit
types name a unit."""

import pytest

from kvmpod.guest.unitfile import unit_value
from kvmpod.guest.unitname import unit_name_from_path


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b", "\n"])
def test_line_breaks_and_nul_are_refused(value):
    with pytest.raises(ValueError, match="contains a control character .* and cannot be written into a unit file"):
        unit_value("Where", value)


def test_specifiers_are_doubled_and_the_rest_kept():
    assert unit_value("Where", "100% of %n and ÿ") == "100%% of %%n and ÿ"


@pytest.mark.parametrize("suffix", ["mount", ".mnt", ".", ""])
def test_only_real_unit_types_name_a_unit(suffix):
    with pytest.raises(ValueError, match=f"invalid unit suffix: {suffix!r}"):
        unit_name_from_path("/data", suffix)


@pytest.mark.parametrize("path, message", [
    ("data", "not an absolute path: 'data'"),
    ("/a\nb", "path contains NUL or newline: '/a\\\\nb'"),
    ("/" + "a" * 4096, "path too long \\(4097 bytes\\)"),
    ("/a/../b", "path not normalized: '/a/../b'"),
    ("/" + "a" * 256, "path component longer than 255 bytes"),
])
def test_paths_systemd_cannot_name_are_refused_with_the_reason(path, message):
    from kvmpod.guest.unitname import escape_path

    with pytest.raises(ValueError, match=message):
        escape_path(path)


def test_quote_word_refuses_nul_and_lone_surrogates_by_name():
    from kvmpod.guest.unitfile import UnsafeValue, quote_word

    with pytest.raises(UnsafeValue) as raised:
        quote_word("a\0b")
    assert str(raised.value) == "'a\\x00b' contains NUL, which no argument or variable can hold"
    with pytest.raises(UnsafeValue) as raised:
        quote_word("a\ud800")
    assert str(raised.value) == "'a\\ud800' is not valid Unicode (a lone surrogate)"


@pytest.mark.parametrize("key, value, problem", [
    ("What", "a\x7fb", "contains a control character (a line break, NUL, tab, …)"),
    ("What", "a\x1fb", "contains a control character (a line break, NUL, tab, …)"),
    ("What", " lead", "starts or ends with white space, which systemd strips"),
    ("What", "trail ", "starts or ends with white space, which systemd strips"),
    ("What", "one\\", "ends in a backslash, which makes systemd join the next line onto it"),
    ("What", "three\\\\\\", "ends in a backslash, which makes systemd join the next line onto it"),
    ("What", "x\ud800", "is not valid Unicode (a lone surrogate)"),
])
def test_each_value_no_unit_file_can_hold_is_refused_with_why(key, value, problem):
    from kvmpod.guest.unitfile import UnsafeValue

    with pytest.raises(UnsafeValue) as raised:
        unit_value(key, value)
    assert str(raised.value) == f"{key}={value!r:.300} {problem} and cannot be written into a unit file"


@pytest.mark.parametrize("value", ["two\\\\", "a\u00a0b", "tab\\tinside", "x\\y", "\u00a0lead", "trail\u2003",
                                   "Xboth ends are XX"])  # systemd strips " \t\n\r" only
def test_an_even_run_of_backslashes_and_inner_characters_are_kept(value):
    assert unit_value("What", value) == value


def test_a_percent_where_systemd_expands_no_specifiers_is_refused():
    from kvmpod.guest.unitfile import UnsafeValue

    with pytest.raises(UnsafeValue) as raised:
        unit_value("Type", "9p%")
    assert str(raised.value) == "Type='9p%' contains '%' and cannot be written into a unit file"
    assert unit_value("CPUQuota", "25%") == "25%" and unit_value("Where", "/a%b") == "/a%%b"


@pytest.mark.parametrize("comment", ["two\nlines", "carriage\rreturn"])
def test_a_comment_with_a_line_break_is_refused(comment):
    from kvmpod.guest.unitfile import UnsafeValue, render_unit

    with pytest.raises(UnsafeValue) as raised:
        render_unit([("Unit", [])], comment=comment)
    assert str(raised.value) == f"comment {comment!r:.100} has a line break"
