"""appc's resource quantities ("1G", "512Mi", "500m", 2): one parser for the host's VM sizing
(host/resources.py) and the guest's cgroup limits (pod/isolators.py).
"""

# Kubernetes resource.Quantity suffixes, which appc uses.
SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "m": "0.001", "": 1,
}


def parse_quantity(value: object):
    """"1G", "512Mi", "500m", "2", 2 as a decimal.Decimal; ValueError when it is none of those."""
    # decimal is imported here: only pods with resource isolators pay for it at boot.
    from decimal import Decimal, InvalidOperation

    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError
    text = str(value)
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number, scale = text[: -len(suffix)], SUFFIXES[suffix]
            break
    else:
        number, scale = text, 1
    if not number or not all(c in "0123456789." for c in number):
        raise ValueError
    try:
        quantity = Decimal(number) * Decimal(scale)
    except InvalidOperation:
        raise ValueError from None
    if quantity < 0:
        raise ValueError
    return quantity
