"""Pure-Python SipHash-2-4 (Aumasson & Bernstein, 2012).

Needed only to reproduce systemd's hashed names for over-long unit names
(unit_name_hash_long); stdlib has no keyed siphash exposed, so we carry
our own. Output is the 64-bit value as systemd/the reference code computes
it before serialising it little-endian.
"""

_MASK = 0xFFFFFFFFFFFFFFFF


def siphash24(data: bytes, key: bytes) -> int:
    """Return SipHash-2-4 of `data` under the 16-byte `key` as an int."""
    if len(key) != 16:
        raise ValueError("siphash24 key must be 16 bytes")
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:], "little")
    # "somepseudorandomlygeneratedbytes"
    v0 = 0x736F6D6570736575 ^ k0
    v1 = 0x646F72616E646F6D ^ k1
    v2 = 0x6C7967656E657261 ^ k0
    v3 = 0x7465646279746573 ^ k1
    n = len(data)
    full = n - n % 8
    # Message words, then the final block: leftover bytes little-endian with
    # the length (mod 256) in the top byte; then 4 finalization rounds.
    words = [int.from_bytes(data[i:i + 8], "little") for i in range(0, full, 8)]
    words.append(int.from_bytes(data[full:], "little") | ((n & 0xFF) << 56))
    m = 0
    # Schedule: 2 compression rounds per word, then 4 finalization rounds.
    # Rounds are inlined: a helper call per round costs ~3x on CPython.
    for step in range(len(words) + 1):
        if step < len(words):
            m = words[step]
            v3 ^= m
            rounds = 2
        else:
            v2 ^= 0xFF
            rounds = 4
        for _ in range(rounds):
            v0 = (v0 + v1) & _MASK
            v1 = ((v1 << 13) | (v1 >> 51)) & _MASK ^ v0
            v0 = ((v0 << 32) | (v0 >> 32)) & _MASK
            v2 = (v2 + v3) & _MASK
            v3 = ((v3 << 16) | (v3 >> 48)) & _MASK ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = ((v3 << 21) | (v3 >> 43)) & _MASK ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = ((v1 << 17) | (v1 >> 47)) & _MASK ^ v2
            v2 = ((v2 << 32) | (v2 >> 32)) & _MASK
        if step < len(words):
            v0 ^= m
    return v0 ^ v1 ^ v2 ^ v3
