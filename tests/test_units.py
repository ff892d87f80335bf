"""Unit strings -> base units, their errors, and the formatters."""

from __future__ import annotations

import doctest
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livemig.core import units
from livemig.core.units import (
    UnitError,
    format_bytes,
    format_duration,
    format_rate,
    parse_bytes,
    parse_duration,
    parse_rate,
)

GiB = 2**30


def test_doctests() -> None:
    result = doctest.testmod(units, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1B", 1),
        ("1KiB", 1024),
        ("1MiB", 2**20),
        ("4GiB", 4 * GiB),
        ("2TiB", 2 * 2**40),
        ("1kB", 1000),
        ("1MB", 10**6),
        ("1GB", 10**9),
        ("1TB", 10**12),
        ("1.5GiB", 3 * GiB // 2),
        ("4 GiB", 4 * GiB),
        ("  4   GiB  ", 4 * GiB),
        (".5KiB", 512),
        ("1e3 B", 1000),
        ("+2KiB", 2048),
        ("0.4B", 0),
        ("0.6B", 1),
        ("0", 0),
        (0, 0),
        (0.0, 0),
    ],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    result = parse_bytes(text)
    assert result == expected and isinstance(result, int)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1B/s", 1.0),
        ("1KiB/s", 1024.0),
        ("1MiB/s", 2.0**20),
        ("1GiB/s", 2.0**30),
        ("1kB/s", 1e3),
        ("1MB/s", 1e6),
        ("1GB/s", 1e9),
        ("8bit/s", 1.0),
        ("1kbit/s", 125.0),
        ("1Mbit/s", 125_000.0),
        ("1Gbit/s", 1.25e8),
        ("10 Gbit/s", 1.25e9),
        ("0", 0.0),
    ],
)
def test_parse_rate(text: str, expected: float) -> None:
    assert parse_rate(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250us", 250e-6),
        ("300ms", 0.3),
        ("2s", 2.0),
        ("1.5 min", 90.0),
        ("2h", 7200.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


def test_message_names_value_and_expectation() -> None:
    with pytest.raises(UnitError) as info:
        parse_rate("3 MBps", name="bandwidth")
    assert str(info.value) == (
        "bandwidth: '3 MBps' is not a rate; expected a number and one of B/s, KiB/s, MiB/s, "
        "GiB/s, kB/s, MB/s, GB/s, bit/s, kbit/s, Mbit/s, Gbit/s (did you mean 'MB/s'?)"
    )
    assert isinstance(info.value, ValueError)
    assert info.value.value == "3 MBps" and info.value.problem == "is not a rate"


@pytest.mark.parametrize(
    ("parse", "text", "fragment"),
    [
        (parse_bytes, "4096", "is not a size (no unit)"),
        (parse_bytes, "4 gib", "did you mean 'GiB'?"),
        (parse_bytes, "4KB", "did you mean 'kB'?"),
        (parse_bytes, "4GiB/s", "did you mean 'GiB'?"),
        (parse_bytes, "4 GiBs", "did you mean 'GiB'?"),
        (parse_bytes, "GiB", "is not a size"),
        (parse_bytes, "", "is not a size"),
        (parse_bytes, "4 GiB extra", "is not a size"),
        (parse_bytes, "1.2.3GiB", "is not a size"),
        (parse_bytes, "nan GiB", "is not a size"),
        (parse_bytes, "inf", "is not a size"),
        (parse_bytes, "1e999 GiB", "is not a finite number"),
        (parse_bytes, "1e300 TiB", "is too large"),
        (parse_bytes, 4096, "is not a size (no unit)"),
        (parse_bytes, True, "is not a size"),
        (parse_bytes, None, "is not a size"),
        (parse_bytes, float("nan"), "is not a finite number"),
        (parse_bytes, float("inf"), "is not a finite number"),
        (parse_rate, "1 GiB", "did you mean 'GiB/s'?"),
        (parse_rate, "10 Gbps", "did you mean 'Gbit/s'?"),
        (parse_rate, "5", "is not a rate (no unit)"),
        (parse_duration, "5 sec", "did you mean 's'?"),
        (parse_duration, "5m", "did you mean 'min'?"),
        (parse_duration, "5", "expected a number and one of us, ms, s, min, h"),
        (parse_duration, [5], "is not a duration"),
    ],
)
def test_errors(parse, text: object, fragment: str) -> None:  # noqa: ANN001
    with pytest.raises(UnitError) as info:
        parse(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_sign_checks() -> None:
    assert parse_bytes("-1KiB") == -1024  # no sign keyword: the caller allows negatives
    assert parse_duration("-2s") == -2.0
    assert parse_rate("0", non_negative=True) == 0.0
    with pytest.raises(UnitError, match=r"^'-5MiB/s' must be >= 0$"):
        parse_rate("-5MiB/s", non_negative=True)
    with pytest.raises(UnitError, match=r"^dirty_rate: '-5MiB/s' must be > 0$"):
        parse_rate("-5MiB/s", positive=True, name="dirty_rate")
    with pytest.raises(UnitError, match="must be > 0"):
        parse_duration("0ms", positive=True)
    with pytest.raises(UnitError, match="must be > 0"):
        parse_bytes("0.4B", positive=True)  # rounds to 0 bytes


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (512, "512 B"), (1536 * 2**20, "1.5 GiB"), (2**40, "1 TiB"), (2**20 - 1, "1 MiB")],
)
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


def test_format_rate_and_duration() -> None:
    assert format_rate(100 * 2**20) == "100 MiB/s"
    assert format_rate(1.25e9, bits=True) == "10 Gbit/s"
    assert format_rate(999.9e6 / 8, bits=True) == "1 Gbit/s"
    assert format_duration(0.3) == "300 ms"
    assert format_duration(59.999) == "1 min"
    assert format_duration(5400) == "1.5 h"
    assert format_duration(-2) == "-2 s"


@given(st.integers(min_value=0, max_value=2**50))
def test_format_bytes_parses_back(value: int) -> None:
    # three significant digits: the round trip is within 0.5 %
    assert parse_bytes(format_bytes(value)) == pytest.approx(value, rel=5e-3, abs=1)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False), st.booleans())
def test_format_rate_parses_back(value: float, bits: bool) -> None:
    assert parse_rate(format_rate(value, bits=bits)) == pytest.approx(value, rel=5e-3, abs=1)


@given(st.floats(min_value=1e-6, max_value=1e7, allow_nan=False))
def test_format_duration_parses_back(value: float) -> None:
    assert parse_duration(format_duration(value)) == pytest.approx(value, rel=5e-3)


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_unit_error(text: str) -> None:
    for parse in (parse_bytes, parse_rate, parse_duration):
        try:
            value = parse(text)
        except UnitError as err:
            assert len(str(err).splitlines()) == 1
        else:
            assert math.isfinite(value)
