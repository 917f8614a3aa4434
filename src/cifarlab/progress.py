"""Progress bars: tqdm's text bars in a terminal, widgets in a notebook, a line of text without ipywidgets.

In a terminal nothing changes from plain tqdm. In a notebook, bars nest (a ladder's runs, a run's epochs, an epoch's
steps) and vanish when done unless asked to stay (`leave=True`), so a long ladder leaves its results, not a column
of finished bars. Without ipywidgets a notebook cannot move the cursor up, so only the innermost bars are drawn, on
one line that redraws itself; the outer ones (`outer=True`) are left out and their lines of text say the rest.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import std


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (Jupyter, JupyterLab, Colab, VS Code), not a terminal or IPython shell."""
    ipython = sys.modules.get("IPython")
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    if ipython is None or zmqshell is None:
        return False
    return isinstance(ipython.get_ipython(), zmqshell.ZMQInteractiveShell)


def has_widgets() -> bool:
    """Whether ipywidgets is there for tqdm's notebook bars."""
    try:
        from tqdm.notebook import IProgress
    except ImportError:
        return False
    return IProgress is not None


def progress_bar(*, outer: bool = False, **options: Any) -> std.tqdm:
    """A tqdm bar for where this runs; `options` are tqdm's (total, desc, unit, leave, disable, ...).

    Args:
        outer: the bar holds other bars inside it (a ladder's, a run's): in a notebook without ipywidgets it is
            not drawn, since only one line of text can redraw itself there.
        **options: tqdm's arguments. In a notebook `leave` defaults to False and `position` is dropped.
    """
    if not in_notebook():
        return std.tqdm(**options)
    options.setdefault("leave", False)
    options.pop("position", None)
    if has_widgets():
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar(**options)
    if outer:
        options["disable"] = True
    return std.tqdm(**options, position=0, file=sys.stderr)


def write(message: str) -> None:
    """Print a line between progress bars, as `tqdm.write` does."""
    std.tqdm.write(message)
