"""The CIFAR-10-C corruptions' names, families and severities, and the CLI values that choose among them.

Apart from `corruptions` (the algorithms), so that checking a command's options needs neither scipy nor the images.
"""

from __future__ import annotations

import difflib

FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for members in FAMILIES.values() for name in members)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def unknown_corruption(value: str, choices: tuple[str, ...]) -> ValueError:
    """The error for an unknown corruption name: the closest valid ones, then every choice."""
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.7)
    close += [c for c in choices if value and c.startswith(value.lower()) and c not in close]  # "jpeg", "zoom"
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ValueError(f"unknown corruption {value!r}{hint} (choose from: {', '.join(choices)})")


def check_severity(severity: object) -> int:
    """`severity` itself, if it is an integer in 1..5.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5; got {severity!r}")
    return severity


def parse_corruptions(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated list of corruption and family names (a CLI value).

    Args:
        text: e.g. "gaussian_noise,blur"; None or "all" means all 15. Case and '-' for '_' are forgiven.

    Returns:
        Corruption names in the order given, families expanded, duplicates dropped.

    Raises:
        ValueError: naming an unknown entry and the closest valid ones, or if the list is empty.
    """
    if text is None or text.strip().lower() == "all":
        return CORRUPTIONS
    choices = (*CORRUPTIONS, *FAMILIES, "all")
    names: list[str] = []
    for token in text.split(","):
        key = token.strip().lower().replace("-", "_")
        if not key:
            continue
        if key not in choices:
            raise unknown_corruption(token.strip(), choices)
        for member in CORRUPTIONS if key == "all" else FAMILIES.get(key, (key,)):
            if member not in names:
                names.append(member)
    if not names:
        raise ValueError(f"no corruption given in {text!r} (choose from: {', '.join(choices)})")
    return tuple(names)


def parse_severities(text: str | None) -> tuple[int, ...]:
    """Parse a comma-separated list of severities (a CLI value).

    Args:
        text: e.g. "1,3,5"; None or "all" means 1..5.

    Returns:
        The severities in the order given, duplicates dropped.

    Raises:
        ValueError: for an entry that is not an integer in 1..5, or an empty list.
    """
    if text is None or text.strip().lower() == "all":
        return SEVERITIES
    values: list[int] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        try:
            value = int(token)
        except ValueError:
            raise ValueError(f"severity must be an integer in 1..5; got {token!r}") from None
        if check_severity(value) not in values:
            values.append(value)
    if not values:
        raise ValueError(f"no severity given in {text!r}; use integers in 1..5")
    return tuple(values)
