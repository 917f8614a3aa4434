"""Durations as users type them: '90m', '2h', '45s', '1h30m', or a plain number of seconds."""

from __future__ import annotations

import re

_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, flag: str) -> float:
    """Seconds in `text`, which `flag` (e.g. '--budget') gave.

    Raises:
        ValueError: for anything but a duration such as 90m, 2h, 1h30m or 600 (seconds), naming the flag.
    """
    rest = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", rest)
    if not parts or "".join(number + unit for number, unit in parts) != rest:
        raise ValueError(f"{flag} {text!r}: give a duration such as 90m, 2h, 1h30m or 600 (seconds)")
    return float(sum(float(number) * _UNITS[unit] for number, unit in parts))


def format_duration(seconds: float) -> str:
    """'4m57s', '0m38s', '1h02m': a duration as tables and progress lines show it."""
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"
