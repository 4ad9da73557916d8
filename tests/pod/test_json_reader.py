"""json_reader.loads is json.loads: the same value for every document, the same error for every broken one."""

import json
import math
from pathlib import Path

import pytest

from kvmpod.pod import json_reader
from kvmpod.pod.manifest import load_json
from kvmpod.pod.problems import InvalidInput

TESTS = Path(__file__).resolve().parents[1]
EXAMPLES = TESTS.parent / "generator" / "kvmpod" / "examples"

DOCUMENTS = [
    '{"acKind": "PodManifest", "apps": [], "volumes": [{"name": "v", "readOnly": true, "mode": "0755"}]}',
    "  \n\t[1, -2, 3.5, 1e400, -0.0, 12345678901234567890, null, false, true]\r\n",
    '{"dup": 1, "dup": 2}',  # the last one wins
    '"\\u00e9\\ud83d\\ude00 caf\u00e9 \\n\\t\\"\\\\"',
    '{"nested": {"deep": [[[{"x": []}]]]}, "": {}}',
    "0", "[]", "{}", '"a"',
]
BROKEN = [
    "", "   ", "{", '{"a": }', '{"a" 1}', "[1,]", '{"a": 1} x', "[1] [2]", '"tab\there"', '"line\nbreak"',
    "\ufeff{}", "{'single': 1}", "[01]", '{"a": 1,}', "nul\0", "[1, 2", '"\\x"', "tru", "[" * 100000,
]


def case_files() -> list[str]:
    files = [*EXAMPLES.rglob("*.json"), *(TESTS / "guest" / "generator_cases").rglob("*.json")]
    assert len(files) >= 3, "the example and case manifests moved; point this test at them"
    # Cases that are not UTF-8 test the file reader, not JSON.
    return [t for t in (p.read_bytes().decode(errors="replace") for p in files) if "\ufffd" not in t]


def json_accepts(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


VALID = DOCUMENTS + [t for t in case_files() if json_accepts(t)]
BROKEN += [t for t in case_files() if not json_accepts(t)]


@pytest.mark.parametrize("text", VALID, ids=range(len(VALID)))
def test_a_valid_document_reads_as_json_loads_reads_it(text):
    assert json_reader.loads(text) == json.loads(text)
    assert repr(json_reader.loads(text)) == repr(json.loads(text))  # types too: 1 is not 1.0 nor True


def test_the_constants_are_the_same_floats():
    values = json_reader.loads("[NaN, Infinity, -Infinity]")
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize("text", BROKEN, ids=range(len(BROKEN)))
def test_a_broken_document_fails_as_json_loads_fails(text):
    with pytest.raises(Exception) as expected:
        json.loads(text)
    with pytest.raises(type(expected.value)) as got:
        json_reader.loads(text)
    assert str(got.value) == str(expected.value)


def test_load_reads_a_file_as_json_load(tmp_path):
    path = tmp_path / "manifest"
    path.write_text(DOCUMENTS[0], encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        assert json_reader.load(f) == json.loads(DOCUMENTS[0])


def test_load_json_names_the_file_line_and_column():
    with pytest.raises(InvalidInput) as error:
        load_json('{\n  "apps": [,]\n}', "/etc/kvmpod/pod.json")
    assert str(error.value) == "/etc/kvmpod/pod.json: is not valid JSON: Expecting value at line 2 column 12; fix the syntax"
