"""The book's figure style and palette (the same colour means the same thing in every chapter),
and :func:`explore`: a figure with live controls in JupyterLab, a static one in the book."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib as mpl
from cycler import cycler

from hamlib import _checks as check

__all__ = ["COLORS", "CYCLE", "explore", "interactive_session", "use_style"]

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


def interactive_session() -> bool:
    """True when figures can have live controls: a Jupyter kernel, ipywidgets installed, and
    ``HAMLIB_STATIC`` unset (or ``0``). The book's executors (``make refresh``, nbval, ``make
    bench``) set ``HAMLIB_STATIC=1``: stored outputs and the static book hold plain figures."""
    if os.environ.get("HAMLIB_STATIC", "") not in ("", "0"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _check_explore_args(
    controls: Mapping[str, Sequence[Any]], initial: Mapping[str, Any] | None
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """The values each control offers, and the values to start at."""
    if not isinstance(controls, Mapping):
        raise TypeError(
            f"controls must be a mapping of keyword -> values, got {type(controls).__name__}"
        )
    if not controls:
        raise ValueError("controls must be a non-empty mapping of keyword -> values")
    choices: dict[str, list[Any]] = {}
    for name, values in controls.items():
        if not isinstance(name, str):
            raise TypeError(f"controls: keys must be keyword names (str), got {name!r}")
        if not name.isidentifier():
            raise ValueError(f"controls: {name!r} is not a keyword name")
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise TypeError(
                f"controls[{name!r}] must be a non-empty sequence of values, "
                f"got {type(values).__name__}"
            )
        if len(values) == 0:
            raise ValueError(f"controls[{name!r}] must be a non-empty sequence of values")
        choices[name] = list(values)
    if initial is not None and not isinstance(initial, Mapping):
        raise TypeError(
            f"initial must be a mapping of keyword -> value, got {type(initial).__name__}"
        )
    start = {name: values[0] for name, values in choices.items()}
    for name, value in (initial or {}).items():
        if name not in choices:
            raise ValueError(f"initial: {name!r} is not one of the controls {list(choices)}")
        if value not in choices[name]:
            raise ValueError(f"initial[{name!r}] = {value!r} is not among its values")
        start[name] = value
    return choices, start


def explore(
    draw: Callable[..., Any],
    controls: Mapping[str, Sequence[Any]],
    initial: Mapping[str, Any] | None = None,
    *,
    interactive: bool | None = None,
) -> None:
    """Show ``draw(**values)`` with a control per entry of ``controls``, redrawn on every change.

    ``controls`` maps each keyword of ``draw`` to the values a reader may pick (numbers give a
    slider over exactly those values, anything else a row of buttons); ``initial`` picks the
    starting values (default: the first of each). ``draw`` makes a matplotlib figure; ``explore``
    shows it. Without live controls (see :func:`interactive_session`; ``interactive`` overrides
    it) the cell shows the figure at the initial values and says what a reader could vary: the
    static book never holds a dead widget. Displays its output itself and returns None (a
    returned widget would be displayed a second time as the cell's value).
    """
    draw = check.function("draw", draw)
    choices, start = _check_explore_args(controls, initial)
    interactive = (
        interactive_session() if interactive is None else check.boolean("interactive", interactive)
    )

    import matplotlib.pyplot as plt

    def show(**values: Any) -> None:
        draw(**values)
        plt.show()

    if not interactive:
        shown = ", ".join(f"{k} = {v}" for k, v in start.items())
        ranges = "".join(f"\n  {k} in {_describe(v)}" for k, v in choices.items())
        print(f"Static figure at {shown}.\nIn JupyterLab this cell has controls for:{ranges}")
        show(**start)
        return None

    from IPython.display import display

    display(_controls(show, choices, start))
    return None


def _controls(
    show: Callable[..., None], choices: dict[str, list[Any]], start: dict[str, Any]
) -> Any:
    """A row of controls over an output that ``show(**values)`` redraws on every change."""
    import ipywidgets as widgets

    boxes: dict[str, Any] = {}
    for name, values in choices.items():
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        kind = widgets.SelectionSlider if numeric else widgets.ToggleButtons
        boxes[name] = kind(options=values, value=start[name], description=name)
    out = widgets.interactive_output(show, boxes)
    return widgets.VBox([widgets.HBox(list(boxes.values())), out])


def _describe(values: list[Any]) -> str:
    if len(values) > 4:
        return f"{{{values[0]}, {values[1]}, ..., {values[-1]}}}"
    return "{" + ", ".join(str(v) for v in values) + "}"
