"""The book's figure style and palette: the same colour means the same thing in every chapter."""

from __future__ import annotations

import matplotlib as mpl
from cycler import cycler

__all__ = ["COLORS", "CYCLE", "use_style"]

# Roles that recur across chapters. A figure that shows "theory" against "measured" uses these two;
# methods (optimizers, integrators, estimators) take their colour from the cycle in a fixed order.
COLORS: dict[str, str] = {
    "theory": "#222222",  # closed forms and bounds: near-black, usually dashed
    "measured": "#0072B2",  # what the code measured: blue
    "reference": "#D55E00",  # an independent reference implementation: vermillion
    "highlight": "#CC79A7",  # a threshold, a claim's boundary: reddish purple
    "muted": "#999999",  # context, individual runs behind a mean
}

# Okabe & Ito's colour-blind safe palette (2008), in a fixed order.
CYCLE: list[str] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]


def use_style() -> None:
    """Apply the book's matplotlib style (called by :func:`hamlib.setup`)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.constrained_layout.use": True,
            "axes.prop_cycle": cycler(color=CYCLE),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "lines.linewidth": 1.8,
            "image.cmap": "viridis",
        }
    )
