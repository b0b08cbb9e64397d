"""The training-curves figure logged with every run (loss and validation metrics per epoch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

VALID_CURVES = ("valid_mrr", "valid_hits_at_1", "valid_hits_at_3", "valid_hits_at_10")


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Draw loss (left) and validation metrics (right) against the epoch into a PNG.

    Built on a bare :class:`~matplotlib.figure.Figure` (no pyplot), which renders
    with Agg whatever the session's backend: training runs on servers without a display.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), dpi=100)
    loss_axes, valid_axes = figure.subplots(1, 2)
    _plot(loss_axes, history, ("loss",))
    loss_axes.set_ylabel("training loss")
    _plot(valid_axes, history, VALID_CURVES)
    valid_axes.set_ylabel("validation (filtered)")
    valid_axes.set_ylim(0.0, 1.0)
    for axes in (loss_axes, valid_axes):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    figure.savefig(target, format="png")
    return target


def _plot(axes: Any, history: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    for key in keys:
        points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
        if points:
            epochs, values = zip(*points)
            axes.plot(epochs, values, marker="o", markersize=3, label=key)
    if axes.get_lines():
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no values recorded", ha="center", va="center", transform=axes.transAxes)
