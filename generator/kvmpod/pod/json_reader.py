"""json.loads for the boot path, without the `re` that `import json` brings along.

`import json` costs a Python generator about as much as starting the interpreter: json.decoder
imports `re`, which imports `enum`, `functools` and `collections` (~10 ms on these machines,
against ~10 ms for a bare `python3 -I -S`). The decoding itself is done in C by
`_json.make_scanner`, the very scanner json.loads drives; `re` only serves json's skipping of
white space and its error messages. So a valid document is decoded by that scanner, with
json.loads's defaults, and anything else (a syntax error, a byte-order mark, a Python without the
`_json` accelerator) goes through json.loads itself, which raises json's own error: the same value
or the same json.JSONDecodeError as json.loads, always.

It offers what the boot path uses of json, `loads`, `load` and `JSONDecodeError`, so a module
imports it `as json` and reads like any user of json.
"""

try:
    from _json import make_scanner as _make_scanner
except ImportError:  # no C accelerator: json.loads does it all
    _make_scanner = None

_WHITESPACE = " \t\n\r"  # what json skips around a document (its WHITESPACE pattern)


class _Defaults:
    """The settings the scanner reads from a json.JSONDecoder: those of json.loads()."""

    strict = True  # control characters inside strings are errors
    object_hook = None
    object_pairs_hook = None  # duplicate keys: the last one wins, as in json.loads
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity: the floats json.loads gives


_scan = _make_scanner(_Defaults()) if _make_scanner is not None else None


def loads(text: str) -> object:
    """The value of the JSON document `text`, exactly as json.loads(text) returns it or fails."""
    if _scan is not None:
        try:
            start = len(text) - len(text.lstrip(_WHITESPACE))
            value, end = _scan(text, start)
            if not text[end:].strip(_WHITESPACE):
                return value
        except Exception:  # noqa: BLE001 - without json.decoder loaded the scanner cannot raise its own error
            pass
    import json  # only a broken document (or a Python without _json) pays for it

    return json.loads(text)


def load(file) -> object:
    """json.load(file): the document read from a text file object."""
    return loads(file.read())


def __getattr__(name: str) -> object:
    # json.JSONDecodeError, imported only when an `except` clause asks for it, i.e. on an error.
    if name == "JSONDecodeError":
        from json import JSONDecodeError

        return JSONDecodeError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
