"""The notebook layer: how results show themselves in Jupyter, and what a run shows while it trains there.

- `html`: each result's `_repr_html_` card (the figure that matters, a table or curves, the full report's path).
- `figures`: the matplotlib Figures the results' `plot()` methods return.
- `live`: the callbacks a run gets in a notebook: a bar over its epochs and the seed's two plots, redrawn in place.

Results are plain objects made by the API; this layer only renders them, and sits beside the reports.
"""

from cifarlab.display.html import show_report

__all__ = ["show_report"]
