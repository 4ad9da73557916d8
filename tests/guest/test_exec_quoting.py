"""ExecStart= words and Environment= assignments, character by character: what the golden cases and
the boot do not spell out (tabs, control characters, backslashes and newlines in values). Boot A
checks on a real systemd that such arguments arrive as written (tests/e2e/test_pod_valid.py)."""

import pytest

from kvmpod.guest.app_services import environment_assignment, exec_word


@pytest.mark.parametrize("word, written", [
    ("plain", "plain"),
    ("two words", '"two words"'),
    ("tab\there", '"tab\\there"'),
    ("new\nline", '"new\\nline"'),
    ("bell\x07and\x1bescape", '"bell\\x07and\\x1bescape"'),
    ("back\\slash", '"back\\\\slash"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("$HOME", '"$$HOME"'),
    (";", "\\;"),
    ("", '""'),
])
def test_exec_word(word, written):
    assert exec_word(word) == written


def test_environment_assignment_escapes_backslash_quote_and_newline():
    assert environment_assignment("X", 'a\\b\nc"d') == '"X=a\\\\b\\nc\\"d"'
