"""The seed project's functions, kept by name as thin calls to the estimators and training recipes."""

import numpy as np
from sklearn.frozen import FrozenEstimator

from .training import make_verifier, train_siamese_model
from .verification import VotingVerifier

__all__ = ["train_siamese_model", "train_model", "get_predictions_for_single", "perform_voting", "vote_preprocessed",
           "vote_rows"]


def train_model(X, y, **verifier_params):
    """Fit the recommended pipeline (:func:`make_verifier`) on (reference, questioned) pairs.

    Parameters
    ----------
    X : array-like of shape (n_pairs, 2)
        Paths or images.
    y : array-like of shape (n_pairs,), 1 genuine, 0 forgery
    **verifier_params
        :func:`make_verifier` parameters.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
    """
    return make_verifier(**verifier_params).fit(X, y)


def get_predictions_for_single(model, reference, questioned):
    """Verify one questioned signature against one reference with a fitted pipeline.

    Returns
    -------
    label : int
        1 genuine, 0 forgery (at the model's threshold).
    probability : float
        Probability that the questioned signature is genuine.
    """
    X = np.empty((1, 2), dtype=object)
    X[0] = [reference, questioned]
    return int(model.predict(X)[0]), float(model.predict_proba(X)[0, 1])


def perform_voting(model, questioned, references, *, voting="soft"):
    """Verify a questioned signature against several references with a fitted pipeline.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        A fitted ``preprocess -> verifier`` pipeline (:func:`make_verifier`).
    questioned : path or image
    references : sequence of paths or images
        Genuine signatures of the claimed writer.
    voting : {"soft", "hard", "normalized"}, default="soft"
        Soft: genuine when the mean probability reaches the model's threshold. Hard: genuine when
        a majority of the references accept it at that threshold. Normalized: the model's
        calibrated distance-ratio voter (``model.reference_voter_``, which
        :func:`~sigest.training.train_verifier` fits and model files keep) decides, at its own
        threshold; needs at least 2 references.

    Returns
    -------
    label : int
        1 genuine, 0 forgery.
    probability : float
        Mean genuine probability (soft), share of genuine votes (hard) or the voter's calibrated
        probability (normalized).
    per_reference : ndarray of shape (k,)
        Genuine probability against each reference: the evidence.
    """
    row = np.empty((1, 1 + len(references)), dtype=object)
    row[0] = [questioned, *references]
    return vote_preprocessed(model, model[:-1].transform(row), voting=voting)


def vote_preprocessed(model, X, *, voting="soft"):
    """:func:`perform_voting` on one row the model's preprocessing has already turned into arrays.

    For callers that keep the preprocessed images as well (to draw them, say), so that each image
    is preprocessed once.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        As in :func:`perform_voting`.
    X : ndarray of shape (1, 1 + k, 1, H, W), or dict
        ``model[:-1].transform`` of the row (questioned, reference_1, ..., reference_k): the
        images, or ``{"images": ..., "ink": ...}`` when the preprocessing measures the ink.
    voting : {"soft", "hard", "normalized"}, default="soft"

    Returns
    -------
    label, probability, per_reference
        As :func:`perform_voting` returns them.
    """
    labels, probabilities, per_reference = vote_rows(model, X, voting=voting)
    return int(labels[0]), float(probabilities[0]), per_reference[0]


def vote_rows(model, X, *, voting="soft"):
    """:func:`perform_voting` on many rows the model's preprocessing has already turned into arrays.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        As in :func:`perform_voting`.
    X : ndarray of shape (n, 1 + k, 1, H, W), or dict
        Rows (questioned, reference_1, ..., reference_k) as :class:`~sigest.VotingVerifier` takes
        them: ``model[:-1].transform`` of the rows, or each image once and the rows as positions,
        ``{"images": (p, 1, H, W), "ink": (p, m), "rows": (n, 1 + k)}``.
    voting : {"soft", "hard", "normalized"}, default="soft"

    Returns
    -------
    labels : ndarray of shape (n,)
        1 genuine, 0 forgery.
    probabilities : ndarray of shape (n,)
    per_reference : ndarray of shape (n, k)
        As :func:`perform_voting` returns them, row by row.
    """
    verifier = model[-1]
    if voting == "normalized":
        voter = getattr(model, "reference_voter_", None)
        if voter is None:
            raise ValueError("voting='normalized' needs a model with a calibrated distance-ratio voter "
                             "(model.reference_voter_), as train_verifier and 'sigest train' make")
    else:  # soft: the mean probability against the pair threshold; hard: a majority of the references' own decisions
        threshold = getattr(verifier, "threshold", 0.5) if voting == "soft" else 0.5
        first = {**X, "rows": X["rows"][:1]} if isinstance(X, dict) and "rows" in X else _first_row(X)
        voter = VotingVerifier(FrozenEstimator(verifier), voting=voting, threshold=threshold).fit(first, [1])
    probabilities, per_reference = voter.verify(X)
    return (probabilities >= voter.threshold).astype(int), probabilities, per_reference


def _first_row(X):
    """The first row of rows of images (n, 1 + k, ...) or of their dict with ink: what a frozen voter is fitted on."""
    return {name: value[:1] for name, value in X.items()} if isinstance(X, dict) else X[:1]
