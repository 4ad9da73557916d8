"""The 9p tag both halves agree on, at its 31-byte edge, with a known answer for the hashed form
(sha256sum of the name, by coreutils: "aaaa…" (32) -> 3ba3f5f43b92602683c19aee…)."""

from kvmpod.pod.names import MAX_9P_TAG_BYTES, is_ac_name, ninep_tag


def test_a_name_of_31_bytes_is_its_own_tag():
    assert MAX_9P_TAG_BYTES == 31
    assert ninep_tag("a" * 31) == "a" * 31


def test_a_name_of_32_bytes_is_hashed_to_31():
    assert ninep_tag("a" * 32) == "kvmpod_3ba3f5f43b92602683c19aee"
    assert len(ninep_tag("a" * 32)) == 31


def test_ac_names():
    assert is_ac_name("a-1") and is_ac_name("abc")
    assert not any(is_ac_name(n) for n in ("", "-a", "a-", "a--b", "A", "a_b", "a.b"))
