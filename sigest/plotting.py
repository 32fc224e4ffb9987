"""Figures of a verifier's behaviour, drawn on ``matplotlib.figure.Figure`` objects.

No pyplot state and no backend change: a library must not touch the user's matplotlib session.
Each function draws one figure, saves it atomically to ``path`` (PNG) and returns it.
"""

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ._files import atomic_path

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_score_histogram"]

_KIND_COLOURS = (("genuine", "tab:green"), ("skilled", "tab:red"), ("random", "tab:gray"))


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return fig


def plot_confusion_matrix(matrix, path, *, title="Confusion matrix", normalized=True):
    """Confusion matrix of shape (2, 2), rows true class, columns predicted (forgery, genuine)."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    display = ConfusionMatrixDisplay(np.asarray(matrix), display_labels=["forgery", "genuine"])
    display.plot(ax=ax, cmap="Blues", values_format=".3f" if normalized else "d", colorbar=False)
    ax.set_title(title)
    return _save(fig, path)


def plot_roc(y_true, scores, path, *, title="ROC", name="skilled forgeries"):
    """ROC curve of genuine (1) vs forgery (0) scores, higher meaning genuine."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    RocCurveDisplay.from_predictions(y_true, scores, ax=ax, name=name)
    ax.set_title(title)
    return _save(fig, path)


def plot_score_histogram(scores, kinds, threshold, path, *, xlabel="genuine probability"):
    """Score densities of genuine, skilled and random pairs, with the decision threshold."""
    scores, kinds = np.asarray(scores), np.asarray(kinds)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for kind, colour in _KIND_COLOURS:
        if (kinds == kind).any():
            ax.hist(scores[kinds == kind], bins=40, range=(0, 1), alpha=0.5, label=kind, color=colour, density=True)
    ax.axvline(threshold, color="k", linestyle="--", label="threshold")
    ax.set_xlabel(xlabel)
    ax.legend()
    return _save(fig, path)
