"""The seed project's functions, kept by name as thin calls to the estimators."""

import numpy as np
from skorch.callbacks import EarlyStopping, ProgressBar
from sklearn.frozen import FrozenEstimator

from .callbacks import WriterEER

from .datasets import make_pairs, split_writers
from .embedder import SiameseEmbedder, embedding_targets
from .preprocessing import PreprocessImage
from .verification import LogisticSiameseRegression, VotingVerifier, make_verifier

__all__ = ["train_siamese_model", "train_model", "train_verifier", "get_predictions_for_single", "perform_voting"]


def _split(table, writers, random_state):
    """Train and held-out tables; ``writers`` a fraction, a count or a list of writer names."""
    if isinstance(writers, (list, tuple)):
        return split_writers(table, test_writers=writers)
    return split_writers(table, test_size=writers, random_state=random_state)


def _items(table):
    return table["path" if "path" in table.columns else "image"].tolist()


def train_siamese_model(table, *, size=(150, 220), valid_writers=0.2, patience=5, progress=True,
                        random_state=None, **embedder_params):
    """Train a :class:`SiameseEmbedder` on a signature table, validating on held-out writers.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (``writer``, ``genuine``, ``path`` or ``image``).
    size : tuple of int, default=(150, 220)
    valid_writers : float, int, sequence of str or None, default=0.2
        Writers kept for validation (fraction, count or names); None for none. Their EER
        (:class:`~sigest.callbacks.WriterEER`) is recorded each epoch as ``valid_eer``, training
        stops when it has not improved for ``patience`` epochs, and the best epoch's weights are kept.
    patience : int, default=5
        Epochs without validation-EER improvement before stopping.
    progress : bool, default=True
        Show a progress bar per epoch.
    random_state : int or None, default=None
    **embedder_params
        :class:`SiameseEmbedder` parameters (``max_epochs``, ``module__backbone``, ...).

    Returns
    -------
    embedder : SiameseEmbedder
        Fitted.
    """
    pre = PreprocessImage(size)
    callbacks = list(embedder_params.pop("callbacks", []))
    if progress:
        callbacks.append(ProgressBar())
    if valid_writers is not None:
        table, valid = _split(table, valid_writers, random_state)
        callbacks = [WriterEER(pre.transform(_items(valid)), valid["writer"].to_numpy(), valid["genuine"].to_numpy()),
                     EarlyStopping(monitor="valid_eer", patience=patience, load_best=True), *callbacks]
    embedder = SiameseEmbedder(callbacks=callbacks, random_state=random_state, **embedder_params)
    return embedder.fit(pre.transform(_items(table)), embedding_targets(table["writer"], table["genuine"]))


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


def train_verifier(table, *, valid_writers=0.2, size=(150, 220), backbone="resnet_tiny", max_epochs=20,
                   patience=5, progress=True, random_state=0, **embedder_params):
    """Train the full verifier writer-independently and choose its threshold on validation writers.

    1. Hold out ``valid_writers`` of ``table``; train the embedder on the others with early stopping
       on the held-out writers (:func:`train_siamese_model`).
    2. Fit the logistic regression on balanced pairs of the training writers.
    3. Set the pipeline's threshold to the EER threshold of the validation writers' exhaustive pairs,
       so that ``predict`` on unseen writers uses a threshold chosen without them.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with a ``path`` column, of the training writers only.
    valid_writers : float, int or sequence of str, default=0.2
    size : tuple of int, default=(150, 220)
    backbone : str, default="resnet_tiny"
    max_epochs : int, default=20
    patience : int, default=5
    progress : bool, default=True
    random_state : int, default=0
    **embedder_params
        More :class:`SiameseEmbedder` parameters (``lr``, ``device``, ``criterion__margin``, ...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Fitted ``preprocess -> verifier`` with ``verifier__threshold`` set.
    """
    from sklearn.pipeline import Pipeline

    from .evaluation import choose_threshold, score_pairs

    train, valid = _split(table, valid_writers, random_state)
    embedder = train_siamese_model(table, size=size, valid_writers=list(valid["writer"].unique()), patience=patience,
                                   progress=progress, random_state=random_state, module__backbone=backbone,
                                   max_epochs=max_epochs, **embedder_params)
    pipeline = Pipeline([("preprocess", PreprocessImage(size)),
                         ("verifier", LogisticSiameseRegression(embedder, random_state=random_state))])
    pairs = make_pairs(train, protocol="balanced", forgeries="both", n_per_writer=40, random_state=random_state)
    pipeline.fit(pairs[["reference", "questioned"]], pairs["label"])
    valid_pairs = make_pairs(valid, forgeries="skilled")
    scores = score_pairs(pipeline, valid_pairs["reference"].tolist(), valid_pairs["questioned"].tolist())
    return pipeline.set_params(verifier__threshold=choose_threshold(valid_pairs["label"], scores))


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
    voting : {"soft", "hard"}, default="soft"

    Returns
    -------
    label : int
        1 genuine, 0 forgery.
    probability : float
        Mean genuine probability (soft) or share of genuine votes (hard).
    per_reference : ndarray of shape (k,)
        Genuine probability against each reference: the evidence.
    """
    preprocess, verifier = model[:-1], model[-1]
    row = np.empty((1, 1 + len(references)), dtype=object)
    row[0] = [questioned, *references]
    X = preprocess.transform(row)
    threshold = getattr(verifier, "threshold", 0.5)
    voter = VotingVerifier(FrozenEstimator(verifier), voting=voting, threshold=threshold).fit(X, [1])
    return int(voter.predict(X)[0]), float(voter.predict_proba(X)[0, 1]), voter.reference_probabilities(X)[0]
