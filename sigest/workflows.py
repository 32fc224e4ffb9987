"""The seed project's functions, kept by name as thin calls to the estimators."""

import numpy as np
from sklearn.base import clone
from skorch.callbacks import EarlyStopping, ProgressBar
from sklearn.frozen import FrozenEstimator

from .callbacks import WriterEER

from .datasets import check_writers, make_pairs, split_writers
from .embedder import SiameseEmbedder, embedding_targets
from .preprocessing import PreprocessImage
from .verification import LogisticSiameseRegression, VotingVerifier, make_verifier

__all__ = ["train_siamese_model", "train_model", "train_verifier", "fit_pair_head", "get_predictions_for_single",
           "perform_voting"]


def _split(table, writers, random_state):
    """Train and held-out tables; ``writers`` a fraction, a count or a list of writer names."""
    if isinstance(writers, (list, tuple)):
        return split_writers(table, test_writers=writers)
    return split_writers(table, test_size=writers, random_state=random_state)


def _items(table):
    return table["path" if "path" in table.columns else "image"].tolist()


def _with_rows(table):
    """The table with a fresh index and a ``_row`` column numbering its rows (to index an image array)."""
    return table.reset_index(drop=True).assign(_row=np.arange(len(table)))


def train_siamese_model(table, *, images=None, size=(150, 220), valid_writers=0.15, patience=8, progress=True,
                        random_state=None, init=None, **embedder_params):
    """Train a :class:`SiameseEmbedder` on a signature table, validating on held-out writers.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (``writer``, ``genuine``, ``path`` or ``image``).
    images : ndarray of shape (n_images, 1, H, W) or None, default=None
        The table's images already preprocessed, row for row (from :func:`sigest.cache.load_cache`,
        say); None preprocesses the table's items with ``PreprocessImage(size)``.
    size : tuple of int, default=(150, 220)
    valid_writers : float, int, sequence of str or None, default=0.15
        Writers kept for validation (fraction, count or names); None for none. Their EER
        (:class:`~sigest.callbacks.WriterEER`) is recorded each epoch as ``valid_eer``, training
        stops when it has not improved for ``patience`` epochs, and the best epoch's weights are kept.
    patience : int, default=8
        Epochs without validation-EER improvement before stopping.
    progress : bool, default=True
        Show a progress bar per epoch.
    random_state : int or None, default=None
    init : SiameseEmbedder or None, default=None
        A fitted embedder to start from (fine-tuning): its architecture (``module__*``) and weights
        are taken, then training goes on on ``table``.
    **embedder_params
        :class:`SiameseEmbedder` parameters (``max_epochs``, ``module__backbone``, ...).

    Returns
    -------
    embedder : SiameseEmbedder
        Fitted.

    Raises
    ------
    KeyboardInterrupt
        If training was interrupted (Ctrl-C): a cut-short net is not returned as a trained one.
    """
    if images is None:
        images = PreprocessImage(size).transform(_items(table))
    train = _with_rows(table)
    callbacks = list(embedder_params.pop("callbacks", []))
    if progress:
        callbacks.append(ProgressBar())
    if valid_writers is not None:
        train, valid = _split(train, valid_writers, random_state)
        callbacks = [WriterEER(images[valid["_row"].to_numpy()], valid["writer"].to_numpy(), valid["genuine"].to_numpy()),
                     EarlyStopping(monitor="valid_eer", patience=patience, load_best=True,
                                   sink=print if progress else _silent),
                     *callbacks]
    if init is not None:
        architecture = {k: v for k, v in init.get_params().items() if k.startswith("module__")}
        embedder_params = {**embedder_params, **architecture, "warm_start": True}
    embedder = SiameseEmbedder(callbacks=callbacks, random_state=random_state, **embedder_params)
    if init is not None:
        embedder.initialize()
        embedder.module_.load_state_dict(init.module_.state_dict())
    embedder.fit(images[train["_row"].to_numpy()], embedding_targets(train["writer"], train["genuine"]))
    if embedder.interrupted_:
        raise KeyboardInterrupt(f"training interrupted after {len(embedder.history_)} epoch(s)")
    return embedder


def _silent(*args):
    """A sink that prints nothing."""


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


def _pair_rows(table, **pair_params):
    """:func:`make_pairs` on row numbers: (n_pairs, 2) int array of ``_row`` values and the labels."""
    rows = table[["writer", "genuine"]].assign(path=table["_row"].to_numpy())
    pairs = make_pairs(rows, **pair_params)
    return pairs[["reference", "questioned"]].to_numpy(dtype=int), pairs["label"].to_numpy()


def fit_pair_head(embedder, valid, images, *, n_per_writer=40, random_state=0):
    """The pair classifier and its threshold, fitted on writers the embedder never trained on.

    Parameters
    ----------
    embedder : SiameseEmbedder
        Fitted.
    valid : pandas.DataFrame
        Signature table of the validation writers.
    images : ndarray of shape (n_images, 1, H, W)
        Preprocessed images; ``valid["_row"]`` (or, without that column, ``valid.index``) indexes them.
    n_per_writer : int, default=40
        Balanced pairs of each label per writer (skilled and random forgeries) for the logistic regression.
    random_state : int, default=0

    Returns
    -------
    verifier : LogisticSiameseRegression
        Fitted, its ``threshold`` the EER threshold of the validation writers' exhaustive
        genuine/skilled pairs.
    """
    from .evaluation import choose_threshold
    from .verification import pair_features

    if "_row" not in valid.columns:
        valid = valid.assign(_row=valid.index.to_numpy())
    head_rows, head_labels = _pair_rows(valid, protocol="balanced", forgeries="both", n_per_writer=n_per_writer,
                                        random_state=random_state)
    verifier = LogisticSiameseRegression(FrozenEstimator(embedder), random_state=random_state)
    verifier.fit(images[head_rows], head_labels)
    rows, labels = _pair_rows(valid, forgeries="skilled")
    distinct = np.unique(rows)
    embedded = dict(zip(distinct, embedder.transform(images[distinct])))
    pairs = np.stack([[embedded[a], embedded[b]] for a, b in rows])
    threshold = choose_threshold(labels, verifier.classifier_.predict_proba(pair_features(pairs))[:, 1])
    return verifier.set_params(threshold=threshold)


def train_verifier(table, *, images=None, preprocessor=None, valid_writers=0.15, size=(150, 220),
                   backbone="resnet_tiny", max_epochs=40, patience=8, lr=3e-3, writers_per_batch=32,
                   samples_per_writer=8, progress=True, random_state=0, init=None, **embedder_params):
    """Train the full verifier writer-independently and choose its threshold on validation writers.

    1. Hold out ``valid_writers`` of ``table``; train the embedder on the others, keeping the epoch
       with the lowest validation-writer EER (:func:`train_siamese_model`).
    2. Fit the logistic regression on balanced pairs (skilled and random forgeries) of the
       validation writers, whom the embedder never trained on, so that its probabilities are
       calibrated for unseen writers.
    3. Set the pipeline's threshold to the EER threshold of the validation writers' exhaustive
       genuine/skilled pairs, so that ``predict`` on unseen writers uses a threshold chosen without them.

    The defaults are the recipe measured best in ``benchmarks/recipe.py`` for a CPU-sized model:
    resnet_tiny at 150x220, batch-hard triplets, 32 writers x 8 signatures a batch, lr 3e-3.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with a ``path`` (or ``image``) column, of the training writers only.
    images : ndarray of shape (n_images, 1, H, W) or None, default=None
        The table's images already preprocessed by ``preprocessor``, row for row (a cache);
        None preprocesses them here, once.
    preprocessor : PreprocessImage or None, default=None
        The pipeline's preprocessing; None uses ``PreprocessImage(size)``.
    valid_writers : float, int or sequence of str, default=0.15
    size : tuple of int, default=(150, 220)
    backbone : str, default="resnet_tiny"
    max_epochs : int, default=40
    patience : int, default=8
    lr : float, default=3e-3
    writers_per_batch, samples_per_writer : int, default=32, 8
    progress : bool, default=True
    random_state : int, default=0
        A workflow is reproducible by default; the estimators themselves default to None, as in
        scikit-learn.
    init : sklearn.pipeline.Pipeline or None, default=None
        A fitted verifier to fine-tune (``sigest.pretrained("sigest-base")``, say): its
        preprocessing, network architecture and weights are the starting point; ``size`` and
        ``backbone`` are then ignored. Use a smaller ``lr`` (3e-4) to adapt rather than relearn.
    **embedder_params
        More :class:`SiameseEmbedder` parameters (``device``, ``criterion__margin``, ...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Fitted ``preprocess -> verifier`` with ``verifier__threshold`` set.
    """
    from sklearn.pipeline import Pipeline

    check_writers(table)
    start = None
    if init is not None:
        start = init[-1].embedder_
        preprocessor = clone(init[0]) if preprocessor is None else preprocessor
        if tuple(preprocessor.size) != tuple(init[0].size):
            raise ValueError(f"images of size {tuple(preprocessor.size)} cannot fine-tune a model made for "
                             f"{tuple(init[0].size)}")
    preprocessor = PreprocessImage(size) if preprocessor is None else preprocessor
    if images is None:
        images = preprocessor.transform(_items(table))
    table = _with_rows(table)
    train, valid = _split(table, valid_writers, random_state)
    embedder = train_siamese_model(table, images=images, valid_writers=list(valid["writer"].unique()),
                                   patience=patience, progress=progress, random_state=random_state,
                                   module__backbone=backbone, max_epochs=max_epochs, lr=lr,
                                   writers_per_batch=writers_per_batch, samples_per_writer=samples_per_writer,
                                   init=start, **embedder_params)
    verifier = fit_pair_head(embedder, valid, images, random_state=random_state)
    return Pipeline([("preprocess", preprocessor), ("verifier", verifier)])


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
        Soft: genuine when the mean probability reaches the model's threshold. Hard: genuine when
        a majority of the references accept it at that threshold.

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
    # soft: the mean probability against the pair threshold; hard: a majority of the references' own decisions
    threshold = getattr(verifier, "threshold", 0.5) if voting == "soft" else 0.5
    voter = VotingVerifier(FrozenEstimator(verifier), voting=voting, threshold=threshold).fit(X, [1])
    return int(voter.predict(X)[0]), float(voter.predict_proba(X)[0, 1]), voter.reference_probabilities(X)[0]
