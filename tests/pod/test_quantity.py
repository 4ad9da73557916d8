"""pod/quantity.py: exact quantities without decimal (which the boot path must not import)."""

import pytest

from kvmpod.pod.quantity import parse_quantity


@pytest.mark.parametrize("text, floor, ceil", [
    ("1.5Gi", 1610612736, 1610612736), ("512Mi", 536870912, 536870912), ("1G", 10**9, 10**9),
    ("500m", 0, 1), ("1500m", 1, 2), ("2.5", 2, 3), ("0.1", 0, 1), (3, 3, 3), ("7", 7, 7),
    ("1.000000001G", 1000000001, 1000000001), ("0.5k", 500, 500)])
def test_exact_values(text, floor, ceil):
    q = parse_quantity(text)
    assert (q.floor(), q.ceil()) == (floor, ceil)


def test_millicores_to_percent():
    assert parse_quantity("250m").scaled(1000).floor() // 10 == 25
    assert parse_quantity("1.5").scaled(1000).floor() // 10 == 150


@pytest.mark.parametrize("bad", ["", "G", "1..5", "1.5.5", "-1", "1e3", "１", "1 G", True, 1.5, None, "9" * 41])
def test_refused(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)
