"""/etc/passwd and /etc/group text: entries, id numbers, a group's gid by name (pod/user_database.py),
the one reading that an image's User lookup and a kept pod's journal group share."""

import pytest

from kvmpod.pod.user_database import entries, group_id, id_number

GROUP = "root:x:0:\nadm:x:4:syslog,web\nsystemd-journal:x:101:\n"


def test_a_missing_or_empty_file_has_no_entries_and_no_group():
    assert entries(None, 3) == [] and entries("", 3) == []
    assert group_id(None, "root") is None and group_id("", "root") is None


def test_entries_leave_out_blank_lines_comments_and_short_lines():
    text = "# a comment\n\nroot:x:0:\nbroken\nadm:x\nweb:x:1000:1001::/home/web:/bin/sh\r\nlast:x:9:"
    assert entries(text, 3) == [["root", "x", "0", ""], ["web", "x", "1000", "1001", "", "/home/web", "/bin/sh"],
                                ["last", "x", "9", ""]]
    assert entries(text, 4) == [["root", "x", "0", ""], ["web", "x", "1000", "1001", "", "/home/web", "/bin/sh"],
                                ["last", "x", "9", ""]]
    assert entries(text, 5) == [["web", "x", "1000", "1001", "", "/home/web", "/bin/sh"]]


@pytest.mark.parametrize("text, number", [
    ("0", 0), ("101", 101), ("007", 7), ("65535", 65535), ("4294967294", 4294967294),
    ("0000000000004294967294", 4294967294),  # leading zeros do not make a number too long
    ("4294967295", None),   # (uid_t)-1: "no id"
    ("99999999999", None), ("9" * 5000, None),  # int() would refuse 5,000 digits; here: None
    ("", None), ("abc", None), ("-1", None), ("+1", None), (" 1", None), ("1.0", None),
    ("²", None), ("١٢", None),  # isdigit() is true for these; int() cannot read the first
])
def test_an_id_field_is_a_number_only_in_ascii_digits_below_no_id(text, number):
    assert id_number(text) == number


def test_a_group_is_found_by_its_name_never_by_its_number_or_a_prefix():
    assert group_id(GROUP, "systemd-journal") == 101
    assert group_id(GROUP, "adm") == 4
    assert group_id(GROUP, "systemd") is None       # a prefix of a name is not the name
    assert group_id(GROUP, "4") is None             # a gid is not a name
    assert group_id(GROUP, "syslog") is None        # a member is not a group
    assert group_id(GROUP, "nobody") is None


def test_a_malformed_entry_is_passed_over_for_a_later_good_one():
    text = "# systemd-journal:x:1:\nsystemd-journal\nsystemd-journal:x:abc:\nsystemd-journal:x:²:\n" \
           "systemd-journal:x:4294967295:\nsystemd-journal:x:101:\nsystemd-journal:x:102:\n"
    assert group_id(text, "systemd-journal") == 101  # the first well-formed one, as getent reads it
    assert group_id("systemd-journal:x:abc:\nbroken\n", "systemd-journal") is None
