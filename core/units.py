"""Quantities written by people -> numbers in base units (bytes, bytes/s, seconds).

Every parser takes a string such as ``"4GiB"``, ``"1 Gbit/s"`` or ``"300ms"``
(whitespace between number and unit is optional, units are case-sensitive) and
returns the value in base units. A bare number is accepted only when it is zero,
because ``ram: 4096`` could mean bytes or MiB. Decimals and exponents are fine
(``"1.5GiB"``, ``"2e3 MB"``); NaN, infinities and unknown units are not.
Negative values are rejected when the caller passes ``positive=True`` (> 0) or
``non_negative=True`` (>= 0).

>>> parse_bytes("4GiB")
4294967296
>>> parse_bytes("1.5 kB")
1500
>>> parse_rate("1Gbit/s")
125000000.0
>>> parse_rate("100 MiB/s") == 100 * 2**20
True
>>> parse_duration("300ms")
0.3
>>> parse_duration("2 min")
120.0
>>> parse_bytes(0)
0
>>> try:
...     parse_rate("3 MBps", name="bandwidth")
... except UnitError as err:
...     print(err)
bandwidth: '3 MBps' is not a rate; expected a number and one of \
B/s, KiB/s, MiB/s, GiB/s, kB/s, MB/s, GB/s, bit/s, kbit/s, Mbit/s, Gbit/s (did you mean 'MB/s'?)
>>> try:
...     parse_duration("-1s", non_negative=True)
... except UnitError as err:
...     print(err)
'-1s' must be >= 0

The formatters go the other way, for human output; their result parses back:

>>> format_bytes(1536 * 2**20)
'1.5 GiB'
>>> format_rate(1.25e9)
'1.16 GiB/s'
>>> format_rate(1.25e9, bits=True)
'10 Gbit/s'
>>> format_duration(0.0003)
'300 us'
>>> format_duration(90)
'1.5 min'
"""

from __future__ import annotations

import math
import re

__all__ = [
    "BYTE_UNITS",
    "DURATION_UNITS",
    "RATE_UNITS",
    "GiB",
    "MiB",
    "UnitError",
    "format_bytes",
    "format_duration",
    "format_rate",
    "parse_bytes",
    "parse_duration",
    "parse_rate",
]

KIB = 1024
MiB = KIB**2  # bytes; the constants every module sizes things with
GiB = KIB**3

BYTE_UNITS: dict[str, int] = {
    "B": 1,
    "KiB": KIB,
    "MiB": KIB**2,
    "GiB": KIB**3,
    "TiB": KIB**4,
    "kB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
}

RATE_UNITS: dict[str, float] = {
    "B/s": 1.0,
    "KiB/s": float(KIB),
    "MiB/s": float(KIB**2),
    "GiB/s": float(KIB**3),
    "kB/s": 1e3,
    "MB/s": 1e6,
    "GB/s": 1e9,
    "bit/s": 1 / 8,
    "kbit/s": 1e3 / 8,
    "Mbit/s": 1e6 / 8,
    "Gbit/s": 1e9 / 8,
}

DURATION_UNITS: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}

# Spellings people often write, mapped to the unit they probably meant (for hints only).
_ALIASES: dict[str, str] = {
    "bps": "bit/s",
    "kbps": "kbit/s",
    "Kbps": "kbit/s",
    "Mbps": "Mbit/s",
    "Gbps": "Gbit/s",
    "Bps": "B/s",
    "kBps": "kB/s",
    "KBps": "kB/s",
    "MBps": "MB/s",
    "GBps": "GB/s",
    "KB": "kB",
    "KB/s": "kB/s",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "m": "min",
    "mins": "min",
    "minute": "min",
    "minutes": "min",
    "hr": "h",
    "hour": "h",
    "hours": "h",
    "µs": "us",
    "msec": "ms",
}

_QUANTITY = re.compile(
    r"\s*(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[^\s\d.+-][^\s]*)?\s*"
)


class UnitError(ValueError):
    """A quantity that could not be parsed or is out of range.

    ``str(err)`` is ``"[name: ]'<value>' <problem>[; expected <expected>]"``; the parts are
    kept as attributes so callers (the scenario loader) can re-frame the message.
    """

    def __init__(
        self, value: object, problem: str, expected: str = "", *, name: str | None = None
    ) -> None:
        self.value = value
        self.problem = problem
        self.expected = expected
        self.name = name
        text = f"{value!r} {problem}"
        if expected:
            text += f"; expected {expected}"
        if name:
            text = f"{name}: {text}"
        super().__init__(text)


def _hint(unit: str, units: dict[str, float] | dict[str, int]) -> str:
    """A ``(did you mean 'X'?)`` suffix for a unit that looks like a known one."""
    guess = _ALIASES.get(unit)
    if guess is None:
        folded = [known for known in units if known.lower() == unit.lower()]
        guess = folded[0] if len(folded) == 1 else None
    if guess is None:
        for suffix in ("/s", "s"):  # "1 GiB" for a rate, "1 GiB/s" for a size
            stripped = unit.removesuffix(suffix)
            for candidate in (unit + suffix, stripped):
                if candidate in units and candidate != unit:
                    guess = candidate
                    break
            if guess:
                break
    return f" (did you mean {guess!r}?)" if guess in units else ""


def _parse(
    value: object,
    units: dict[str, float] | dict[str, int],
    what: str,
    *,
    name: str | None,
) -> tuple[float, int | float]:
    """Split ``value`` into (number, unit factor); zero needs no unit."""
    if isinstance(value, str) and (match := _QUANTITY.fullmatch(value)) is not None:
        unit = match["unit"]  # the common case first: a number and a known unit
        known = units.get(unit) if unit is not None else None
        number = float(match["num"])
        if known is not None and math.isfinite(number * known):
            return number, known
    expected = "a number and one of " + ", ".join(units)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnitError(value, f"is not {what}", expected, name=name)
    if isinstance(value, str):
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise UnitError(value, f"is not {what}", expected, name=name)
        number = float(match["num"])
        unit = match["unit"]
    else:
        number, unit = float(value), None
    if math.isnan(number) or math.isinf(number):
        raise UnitError(value, "is not a finite number", expected, name=name)
    if unit is None:
        if number != 0:
            raise UnitError(value, f"is not {what} (no unit)", expected, name=name)
        factor: int | float = 1
    elif unit in units:
        factor = units[unit]
    else:
        raise UnitError(value, f"is not {what}", expected + _hint(unit, units), name=name)
    if math.isinf(number * factor):
        raise UnitError(value, "is too large", expected, name=name)
    return number, factor


def _check_sign(
    value: object, result: float, *, name: str | None, positive: bool, non_negative: bool
) -> None:
    if positive and not result > 0:
        raise UnitError(value, "must be > 0", name=name)
    if non_negative and result < 0:
        raise UnitError(value, "must be >= 0", name=name)


def parse_bytes(
    value: str | int | float,
    *,
    name: str | None = None,
    positive: bool = False,
    non_negative: bool = False,
) -> int:
    """``"4GiB"`` -> 4294967296: a size in bytes, rounded to a whole byte.

    >>> parse_bytes("512 MiB"), parse_bytes("2TB"), parse_bytes("100B")
    (536870912, 2000000000000, 100)
    >>> parse_bytes("0.5 KiB")
    512
    >>> try:
    ...     parse_bytes("4 GB/s")
    ... except UnitError as err:
    ...     print(err)
    '4 GB/s' is not a size; expected a number and one of \
B, KiB, MiB, GiB, TiB, kB, MB, GB, TB (did you mean 'GB'?)
    """
    number, factor = _parse(value, BYTE_UNITS, "a size", name=name)
    result = math.floor(number * factor + 0.5)
    _check_sign(value, result, name=name, positive=positive, non_negative=non_negative)
    return result


def parse_rate(
    value: str | int | float,
    *,
    name: str | None = None,
    positive: bool = False,
    non_negative: bool = False,
) -> float:
    """``"1Gbit/s"`` -> 1.25e8: a rate in bytes per second (bit rates are SI: 1 kbit = 1000 bit).

    >>> parse_rate("8 bit/s"), parse_rate("10Gbit/s"), parse_rate("1 KiB/s")
    (1.0, 1250000000.0, 1024.0)
    >>> try:
    ...     parse_rate("-5MiB/s", positive=True, name="dirty_rate")
    ... except UnitError as err:
    ...     print(err)
    dirty_rate: '-5MiB/s' must be > 0
    """
    number, factor = _parse(value, RATE_UNITS, "a rate", name=name)
    result = number * factor
    _check_sign(value, result, name=name, positive=positive, non_negative=non_negative)
    return result


def parse_duration(
    value: str | int | float,
    *,
    name: str | None = None,
    positive: bool = False,
    non_negative: bool = False,
) -> float:
    """``"300ms"`` -> 0.3: a duration in seconds (units us, ms, s, min, h).

    >>> parse_duration("1.5h"), parse_duration("250 us"), parse_duration("2s")
    (5400.0, 0.00025, 2.0)
    >>> try:
    ...     parse_duration("5")
    ... except UnitError as err:
    ...     print(err)
    '5' is not a duration (no unit); expected a number and one of \
us, ms, s, min, h
    """
    number, factor = _parse(value, DURATION_UNITS, "a duration", name=name)
    result = number * factor
    _check_sign(value, result, name=name, positive=positive, non_negative=non_negative)
    return result


def _number(value: float) -> str:
    """Up to three significant digits, no trailing zeros: 1.50 -> '1.5', 1023.7 -> '1024'."""
    if value != 0 and abs(value) < 100:
        text = f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.0f}"


def _format(value: float, units: list[tuple[str, float]]) -> str:
    """Pick the largest unit in which ``abs(value)`` is at least 1 (the smallest otherwise)."""
    chosen_name, chosen_factor = units[0]
    for unit_name, factor in units:
        if abs(value) >= factor:
            chosen_name, chosen_factor = unit_name, factor
    text = _number(value / chosen_factor)
    names = [unit_name for unit_name, _ in units]
    index = names.index(chosen_name)
    if index + 1 < len(units) and abs(float(text)) * chosen_factor >= units[index + 1][1]:
        # 1023.9 MiB rounds to '1024 MiB' and 59.99 s to '60 s': use the next unit up.
        chosen_name, chosen_factor = units[index + 1]
        text = _number(value / chosen_factor)
    return f"{text} {chosen_name}"


def format_bytes(value: float) -> str:
    """Bytes -> IEC text: ``format_bytes(4 * 2**30) == '4 GiB'``.

    >>> format_bytes(0), format_bytes(1000), format_bytes(10 * 2**40)
    ('0 B', '1000 B', '10 TiB')
    """
    units = [(unit, float(f)) for unit, f in BYTE_UNITS.items() if "iB" in unit or unit == "B"]
    return _format(value, units)


def format_rate(value: float, *, bits: bool = False) -> str:
    """Bytes/s -> ``'100 MiB/s'`` (IEC bytes) or, with ``bits=True``, ``'10 Gbit/s'`` (SI bits).

    >>> format_rate(100 * 2**20), format_rate(1.25e8, bits=True), format_rate(0)
    ('100 MiB/s', '1 Gbit/s', '0 B/s')
    """
    if bits:
        units = [(unit, f) for unit, f in RATE_UNITS.items() if "bit" in unit]
    else:
        units = [(unit, f) for unit, f in RATE_UNITS.items() if "iB" in unit or unit == "B/s"]
    return _format(value, units)


def format_duration(value: float) -> str:
    """Seconds -> ``'300 ms'``, ``'2 s'``, ``'1.5 min'``, ``'2 h'``.

    >>> format_duration(0.3), format_duration(2), format_duration(7200), format_duration(0)
    ('300 ms', '2 s', '2 h', '0 us')
    """
    return _format(value, list(DURATION_UNITS.items()))
