"""Figures of a verifier's behaviour, drawn on ``matplotlib.figure.Figure`` objects.

No pyplot state and no backend change: a library must not touch the user's matplotlib session.
Each function draws one figure, saves it atomically to ``path`` (PNG) and returns it.
"""

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ._files import atomic_path

__all__ = ["plot_confusion_matrix", "plot_roc", "plot_score_histogram", "plot_verification"]

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


def plot_verification(questioned, references, per_reference, probability, threshold, path, *, names=None, ink=None):
    """The evidence of one verification: the questioned signature beside each reference.

    Parameters
    ----------
    questioned : ndarray of shape (H, W)
        The questioned signature as the model saw it (preprocessed; ink bright).
    references : ndarray of shape (k, H, W)
    per_reference : ndarray of shape (k,)
        Genuine probability against each reference.
    probability : float
        The combined genuine probability.
    threshold : float
        The decision threshold.
    path : str or path-like
        PNG file to write.
    names : sequence of str or None
        Labels of the questioned image and the references (file names).
    ink : ndarray of shape (1 + k, 2) or None
        Ink pixels and stroke width of each image on the page
        (:meth:`~sigest.preprocessing.PreprocessImage.transform_with_ink`), shown under its name:
        what the ink comparison weighed, which the preprocessed images no longer show.
    """
    k = len(references)
    names = list(names) if names is not None else ["questioned"] + [f"reference {i + 1}" for i in range(k)]
    if ink is not None:
        names = [f"{name}\nink {int(pixels)} px, stroke {width:.1f} px" for name, (pixels, width) in zip(names, ink)]
    genuine = probability >= threshold
    fig = Figure(figsize=(3.2 * (k + 1), 3.0))
    axes = fig.subplots(1, k + 1, squeeze=False)[0]
    for ax, image, title in zip(axes, [questioned, *references], [names[0], *[
            f"{name}\nP(genuine) {p:.3f}" for name, p in zip(names[1:], per_reference)]]):
        ax.imshow(1.0 - np.asarray(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_title(f"(questioned) {names[0]}", fontsize=9, color="tab:green" if genuine else "tab:red")
    fig.suptitle(f"{'GENUINE' if genuine else 'FORGED'}: P(genuine) {probability:.3f}, threshold {threshold:.3f}",
                 color="tab:green" if genuine else "tab:red")
    return _save(fig, path)
