"""appc's resource quantities ("1G", "512Mi", "500m", "1.5", 2): one parser for the host's VM
sizing (host/resources.py) and the guest's cgroup limits (pod/isolators.py).

Exact, with integers only: a quantity is a fraction numerator/denominator. decimal would do the
same, but importing it loads `collections` and `numbers` on the generator's boot path (~3 ms).
"""

from .frozen import frozen

# Kubernetes resource.Quantity suffixes, which appc uses: (numerator, denominator) of the scale.
SUFFIXES = {
    "Ki": (2**10, 1), "Mi": (2**20, 1), "Gi": (2**30, 1), "Ti": (2**40, 1), "Pi": (2**50, 1), "Ei": (2**60, 1),
    "k": (10**3, 1), "M": (10**6, 1), "G": (10**9, 1), "T": (10**12, 1), "P": (10**15, 1), "E": (10**18, 1),
    "m": (1, 1000), "": (1, 1),
}
_BY_LENGTH = sorted(SUFFIXES, key=len, reverse=True)
MAX_DIGITS = 40  # no real quantity comes near; keeps int() far from Python's digit limit


@frozen
class Quantity:
    numerator: int
    denominator: int  # > 0

    def floor(self) -> int:
        return self.numerator // self.denominator

    def ceil(self) -> int:
        return -(-self.numerator // self.denominator)

    def scaled(self, factor: int) -> "Quantity":
        return Quantity(self.numerator * factor, self.denominator)

    def __float__(self) -> float:
        return self.numerator / self.denominator


def parse_quantity(value: object) -> Quantity:
    """"1G", "512Mi", "500m", "1.5", 2 as an exact Quantity; ValueError when it is none of those."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError
    text = str(value)
    suffix = next(s for s in _BY_LENGTH if text.endswith(s))
    number = text[: len(text) - len(suffix)]
    whole, dot, fraction = number.partition(".")
    digits = whole + fraction
    if not digits or len(digits) > MAX_DIGITS or not (digits.isascii() and digits.isdigit()) or "." in fraction:
        raise ValueError
    scale_num, scale_den = SUFFIXES[suffix]
    return Quantity(int(digits) * scale_num, 10 ** len(fraction) * scale_den)
