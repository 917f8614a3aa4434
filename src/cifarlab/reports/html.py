"""Self-contained HTML pages: inline CSS, images as data URIs, nothing fetched from elsewhere, no scripts."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib
from PIL import Image

from cifarlab.progress import in_notebook

if not in_notebook():  # files only; a notebook keeps its inline backend for the user's own plots
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1.5em; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em;
     margin-top: 1.8em; font-size: 1.25em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.result { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 2em; margin: 0.2em 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(132px, 1fr)); gap: 10px; }
.grid figure { margin: 0; font-size: 0.78em; text-align: center; min-width: 0; }
.grid figcaption span { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.grid img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccc; }
.grid.pairs { grid-template-columns: repeat(auto-fill, minmax(214px, 1fr)); } .grid.pairs img { width: 198px; }
.wrong { color: #b00020; } .note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
.missing { background: #fdecea; border-left: 4px solid #d93025; padding: 0.4em 0.8em; }
.flag { color: #8a5a00; } pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.row { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; } .row > * { flex: 1 1 420px; }
"""


def esc(value: Any) -> str:
    """HTML-escaped text of `value`."""
    return html.escape(str(value))


def png_data_uri(png: bytes) -> str:
    """A data: URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, css_class: str = "plot") -> str:
    """An <img> whose picture is inline."""
    return f'<img class="{css_class}" alt="{esc(alt)}" src="{png_data_uri(png)}">'


class NotebookFigure(Figure):
    """A Figure made without pyplot that a notebook cell shows as a PNG, whichever backend matplotlib runs."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def figure_png(fig: Figure, dpi: int = 100, colours: int | None = 256) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it.

    A chart's lines, markers and text take far fewer than 256 colours, so by default the PNG is a palette image of
    `colours` (a third of the bytes or less, alike to the eye); None keeps every colour (figures of photographs).
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    if colours is None:
        return buffer.getvalue()
    buffer.seek(0)
    picture = Image.open(buffer).convert("RGB").quantize(colours, dither=Image.Dither.NONE)
    compact = io.BytesIO()
    picture.save(compact, format="PNG", optimize=True)
    return compact.getvalue()


def plain_log_x(ax: Axes) -> None:
    """Put `ax`'s x axis on a log scale labelled in plain numbers at 1-2-5 steps (not 3×10¹ 4×10¹ crowding)."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks([t for t in (m * 10.0**e for e in range(-3, 8) for m in (1, 2, 5)) if low <= t <= high])


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """An HTML table; cells are escaped, columns flagged in `numeric` are right-aligned."""
    numeric = list(numeric) if numeric is not None else [False] * len(headers)

    def cell(tag: str, value: Any, i: int) -> str:
        css = ' class="num"' if i < len(numeric) and numeric[i] else ""
        return f"<{tag}{css}>{esc(value)}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", v, i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{body}</tbody></table>"


def section(anchor: str, title: str, body: str) -> str:
    """A titled section of the page."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    """A complete HTML document with inline CSS."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>\n' + "\n".join(sections) + "\n</body></html>\n"
    )
