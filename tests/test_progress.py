"""Progress bars: unchanged tqdm in a terminal; in a notebook, nested bars that vanish, widgets or one text line."""

import pytest
from tqdm import std

from cifarlab import progress


def test_a_terminal_gets_plain_tqdm_with_its_defaults():
    bar = progress.progress_bar(total=3, desc="x", position=0, disable=True)
    assert type(bar) is std.tqdm and bar.leave is True and progress.in_notebook() is False


def test_in_a_notebook_without_widgets_only_the_inner_bars_draw_and_none_is_left(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress, "has_widgets", lambda: False)
    outer = progress.progress_bar(total=3, desc="ladder", outer=True, leave=True)
    inner = progress.progress_bar(total=3, desc="epoch")
    assert type(inner) is std.tqdm and outer.disable and not inner.disable
    assert inner.leave is False and inner.pos == 0  # one line that redraws itself: no cursor moves
    inner.close()
    outer.close()


def test_in_a_notebook_with_widgets_bars_are_widgets_that_go_unless_asked_to_stay(monkeypatch):
    pytest.importorskip("ipywidgets")
    from tqdm.notebook import tqdm as widget_bar

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    stays = progress.progress_bar(total=2, desc="ladder", outer=True, leave=True, position=0)
    goes = progress.progress_bar(total=2, desc="epoch")
    assert isinstance(stays, widget_bar) and isinstance(goes, widget_bar)
    assert stays.leave is True and goes.leave is False
    goes.update(2)
    goes.close()
    stays.update(2)
    stays.close()
