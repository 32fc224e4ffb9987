"""The field's metrics (FAR, FRR, EER, AUC), accuracy and the confusion matrix, plus scorers.

Scores are genuine probabilities (higher = more likely genuine); a signature is accepted as
genuine when its score is at or above the threshold. Follows luizgh/sigver ``wd/metrics.py``.
"""

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, make_scorer, roc_auc_score, roc_curve

__all__ = [
    "calculate_accuracy",
    "build_confusion_matrix",
    "far_frr",
    "equal_error_rate",
    "per_writer_eer",
    "roc_auc",
    "within_writer_pairs",
    "embedding_eer",
    "eer_scorer",
    "SCORERS",
]


def calculate_accuracy(y_true, y_pred):
    """Share of correct decisions: float in [0, 1]."""
    return float(accuracy_score(y_true, y_pred))


def build_confusion_matrix(y_true, y_pred, *, normalize="true", path=None, title="Confusion matrix"):
    """Confusion matrix of forgery (0) / genuine (1) decisions, optionally plotted to a PNG.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
    normalize : {"true", "pred", "all"} or None, default="true"
        As in :func:`sklearn.metrics.confusion_matrix`; "true" gives per-class rates.
    path : str, path-like or None
        Where to save the plot (PNG); None draws nothing.
    title : str

    Returns
    -------
    matrix : ndarray of shape (2, 2)
        Rows true class, columns predicted class, order (forgery, genuine).
    """
    matrix = confusion_matrix(y_true, y_pred, labels=[0, 1], normalize=normalize)
    if path is not None:
        from .plotting import plot_confusion_matrix

        plot_confusion_matrix(matrix, path, title=title, normalized=normalize is not None)
    return matrix


def far_frr(genuine_scores, forgery_scores, threshold):
    """False acceptance and false rejection rates at ``threshold``.

    Returns
    -------
    far : float
        Share of forgeries scored at or above the threshold (accepted).
    frr : float
        Share of genuine signatures scored below the threshold (rejected).
    """
    genuine_scores, forgery_scores = np.asarray(genuine_scores), np.asarray(forgery_scores)
    far = float(np.mean(forgery_scores >= threshold)) if forgery_scores.size else float("nan")
    frr = float(np.mean(genuine_scores < threshold)) if genuine_scores.size else float("nan")
    return far, frr


def equal_error_rate(y_true, scores):
    """Equal error rate: where FAR equals FRR on the ROC curve.

    Parameters
    ----------
    y_true : array-like of shape (n,), 1 genuine, 0 forgery
    scores : array-like of shape (n,), higher means genuine

    Returns
    -------
    eer : float
        Mean of FAR and FRR at the ROC point where they are closest.
    threshold : float
        The score threshold at that point (genuine when ``score >= threshold``), on the scores' own
        scale; where the point is "reject everything", the highest score.
    """
    fpr, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    threshold = thresholds[i] if np.isfinite(thresholds[i]) else np.max(scores)
    return float((fpr[i] + fnr[i]) / 2), float(threshold)


def per_writer_eer(y_true, scores, writers):
    """Mean EER with one threshold per writer (writer-dependent thresholds), as in sigver.

    Writers lacking genuine or forgery scores are skipped.
    """
    y_true, scores, writers = np.asarray(y_true), np.asarray(scores), np.asarray(writers)
    rates = [
        equal_error_rate(y_true[writers == w], scores[writers == w])[0]
        for w in np.unique(writers)
        if len(np.unique(y_true[writers == w])) == 2
    ]
    return float(np.mean(rates)) if rates else float("nan")


def roc_auc(y_true, scores):
    """Area under the ROC curve of genuine-vs-forgery scores."""
    return float(roc_auc_score(y_true, scores))


def within_writer_pairs(writers, genuine):
    """Indices of every genuine/genuine and genuine/skilled-forgery pair inside each writer.

    Parameters
    ----------
    writers : array-like of shape (n,)
    genuine : array-like of shape (n,) of bool

    Returns
    -------
    first, second : ndarray of shape (n_pairs,), int
        The reference (always genuine) and the questioned image of each pair.
    label : ndarray of shape (n_pairs,), int
        1 when the questioned image is genuine, 0 when it is a skilled forgery.
    """
    writers, genuine = np.asarray(writers), np.asarray(genuine, dtype=bool)
    first, second = [], []
    for w in np.unique(writers):
        g = np.flatnonzero((writers == w) & genuine)
        f = np.flatnonzero((writers == w) & ~genuine)
        i, j = np.triu_indices(len(g), k=1)
        first += [g[i], np.repeat(g, len(f))]
        second += [g[j], np.tile(f, len(g))]
    first, second = np.concatenate(first).astype(int), np.concatenate(second).astype(int)
    return first, second, genuine[second].astype(int)


def embedding_eer(embeddings, writers, genuine):
    """EER of genuine vs skilled-forgery pairs scored by negative Euclidean embedding distance.

    Parameters
    ----------
    embeddings : ndarray of shape (n, d)
    writers : array-like of shape (n,)
    genuine : array-like of shape (n,) of bool

    Returns
    -------
    eer : float
        With one global threshold; NaN when there are no pairs of both labels.
    """
    first, second, label = within_writer_pairs(writers, genuine)
    if len(np.unique(label)) < 2:
        return float("nan")
    distance = np.linalg.norm(embeddings[first] - embeddings[second], axis=1)
    return equal_error_rate(label, -distance)[0]


def _eer_only(y_true, scores):
    return equal_error_rate(y_true, scores)[0]


eer_scorer = make_scorer(_eer_only, greater_is_better=False, response_method="predict_proba")
"""Scorer for ``GridSearchCV(scoring=eer_scorer)``: the negated EER of ``predict_proba[:, 1]``."""

SCORERS = {"eer": eer_scorer, "roc_auc": "roc_auc", "accuracy": "accuracy"}
"""Scorers by name, for ``GridSearchCV(scoring=SCORERS, refit="eer")``."""
