"""Read a unit file as systemd 252 does, for the settings kvmpod writes (a mirror for tests).

- conf-parser.c: a line ending in an odd run of backslashes continues on the next line (the
  backslash becomes a space); white space is stripped at both ends; `#`/`;` lines are comments;
  `key=value` splits at the first `=`.
- unit-printf.c: "%%" is "%"; kvmpod never writes another specifier, so one is an error here.
- extract-word.c, extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) for ExecStart= and
  Environment=: words split on white space, '…' and "…" group, and escape.c's cunescape_one reads
  \\a \\b \\f \\n \\r \\t \\v \\s \\\\ \\" \\' \\xNN (a byte) \\NNN (octal byte) \\uNNNN \\UNNNNNNNN.
ExecStart= words are returned before systemd's run-time `$VAR` expansion ("$$" still doubled).
"""

SPECIFIER_FREE = frozenset(("Type", "RemainAfterExit", "DefaultDependencies"))
_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "s": 32, "\\": 92, '"': 34, "'": 39}


class Unparsable(ValueError):
    pass


def parse_unit(text: str) -> list[tuple[str, str, str]]:
    """[(section, key, value)] with specifiers resolved, as systemd's reader sees them."""
    entries = []
    section = ""
    pending = ""
    for raw in text.split("\n"):
        line = pending + raw
        run = len(line) - len(line.rstrip("\\"))
        if run % 2:
            pending = line[:-1] + " "
            continue
        pending = ""
        line = line.strip(" \t\r\n")
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise Unparsable(f"no '=' in {line!r}")
        key, value = key.strip(" \t"), value.strip(" \t")
        entries.append((section, key, value if key in SPECIFIER_FREE else unescape_specifiers(value)))
    return entries


def unescape_specifiers(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        if value[i] == "%":
            if value[i + 1:i + 2] != "%":
                raise Unparsable(f"specifier %{value[i + 1:i + 2]} in {value!r}")
            out.append("%")
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def split_words(value: str) -> list[str]:
    """extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) until the value is used up; bytes from
    \\xNN are collected and decoded as UTF-8 (a stray byte stays as a surrogate escape)."""
    words: list[str] = []
    data = value.encode("utf-8", "surrogatepass")
    i = 0
    while True:
        while i < len(data) and data[i:i + 1] in (b" ", b"\t"):
            i += 1
        if i >= len(data):
            return words
        word = bytearray()
        quote = None
        while i < len(data):
            c = data[i:i + 1]
            if quote is None and c in (b" ", b"\t"):
                break
            if c in (b'"', b"'") and (quote is None or quote == c):
                quote = None if quote == c else c
                i += 1
                continue
            if c == b"\\":
                i = _cunescape_one(data, i + 1, word)
                continue
            word += c
            i += 1
        if quote is not None:
            raise Unparsable(f"unbalanced quote in {value!r}")
        words.append(word.decode("utf-8", "surrogateescape"))


def _cunescape_one(data: bytes, i: int, word: bytearray) -> int:
    if i >= len(data):
        raise Unparsable("trailing backslash")
    c = chr(data[i])
    if c in _SIMPLE:
        word.append(_SIMPLE[c])
        return i + 1
    if c == "x":
        byte = int(data[i + 1:i + 3], 16)
        if byte == 0:
            raise Unparsable("\\x00")
        word.append(byte)
        return i + 3
    if c in "01234567":
        word.append(int(data[i:i + 3], 8))
        return i + 3
    if c in "uU":
        n = 4 if c == "u" else 8
        word += chr(int(data[i + 1:i + 1 + n], 16)).encode("utf-8")
        return i + 1 + n
    if c == ";":  # ExecStart=: "\;" is a literal ";" word, not a command separator
        word.append(59)
        return i + 1
    raise Unparsable(f"unknown escape \\{c}")
