"""Short, one-line error text for messages that quote an exception."""

from __future__ import annotations


def error_gist(error: BaseException) -> str:
    """An exception as 'Type: first line', short; torch's weights-only errors keep their own reason, not advice."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True): a dozen lines of advice, then the reason
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no detail'}"[:300]
