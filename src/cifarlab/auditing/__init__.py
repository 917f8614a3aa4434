"""`cifarlab audit`: likely label errors (confident learning, the `audit` extra) and near-duplicate images.

`audit` and `AuditResult` load on first use (PEP 562), so the near-duplicate finder (`auditing.duplicates`, which
the command line's parser reads its default threshold from) comes without the API and the training stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["AuditResult", "audit"]


def __getattr__(name: str) -> Any:
    """`audit` and `AuditResult`, imported from `auditing.auditor` on first use."""
    if name not in __all__:
        raise AttributeError(f"module 'cifarlab.auditing' has no attribute {name!r}")
    return getattr(importlib.import_module("cifarlab.auditing.auditor"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from cifarlab.auditing.auditor import AuditResult, audit  # noqa: F401
