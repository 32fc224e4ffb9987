"""Training recipes: the verifier pipeline, and training it writer-independently.

:func:`make_verifier` builds the recommended ``PreprocessImage -> LogisticSiameseRegression``
pipeline; :func:`train_verifier` trains that pipeline the way the benchmarks measured it
(validation-writer checkpoints, pair head and threshold fitted on writers the network never saw);
:func:`train_siamese_model`, :func:`fit_whitening`, :func:`fit_pair_head` and :func:`fit_reference_voter`
are its stages.
"""

import copy
import warnings
from numbers import Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline
from skorch.callbacks import EarlyStopping, ProgressBar

from .callbacks import WriterEER
from .datasets import check_writers, make_pairs, make_reference_sets, qualified_writers, split_writers
from .embedder import SiameseEmbedder, embedding_targets
from .nn import within_writer_whitening
from .preprocessing import PreprocessImage
from .verification import PAIR_VIEWS, VOTER_VIEWS, LogisticSiameseRegression, VotingVerifier

__all__ = ["verifier_pipeline", "make_verifier", "train_siamese_model", "fit_whitening", "fit_pair_head",
           "fit_reference_voter", "train_verifier", "calibrate"]


def verifier_pipeline(preprocessor, verifier):
    """The ``preprocess -> verifier`` pipeline every sigest model is: (n, 2) path pairs in, probabilities out."""
    return Pipeline([("preprocess", preprocessor), ("verifier", verifier)])


def make_verifier(
    size=(150, 220),
    *,
    backbone="resnet_tiny",
    embedding_dim=128,
    max_epochs=10,
    lr=3e-3,
    device="auto",
    compare_ink=False,
    random_state=None,
    verbose=0,
    **embedder_params,
):
    """The recommended pipeline: ``PreprocessImage`` then ``LogisticSiameseRegression``.

    Parameters
    ----------
    size : tuple of int (height, width), default=(150, 220)
        Preprocessed image size.
    backbone : str, default="resnet_tiny"
        Registered backbone (:func:`sigest.nn.list_backbones`).
    embedding_dim : int, default=128
    max_epochs : int, default=10
    lr : float, default=3e-3
    device : str, default="auto"
    compare_ink : bool, default=False
        The preprocessing measures each image's ink on the page (``measure_ink``) and the pair
        classifier compares the pair's measures (``compare_ink``) besides the embeddings.
    random_state : int or None, default=None
    verbose : int, default=0
    **embedder_params
        More :class:`SiameseEmbedder` parameters (``callbacks``, ``criterion__margin``, ...).

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Steps ``"preprocess"`` and ``"verifier"``; ``fit(X, y)`` and ``predict_proba(X)`` take
        ``X`` of shape (n_pairs, 2) holding (reference, questioned) paths or images.
    """
    embedder = SiameseEmbedder(
        module__backbone=backbone,
        module__embedding_dim=embedding_dim,
        max_epochs=max_epochs,
        lr=lr,
        device=device,
        random_state=random_state,
        verbose=verbose,
        **embedder_params,
    )
    return verifier_pipeline(PreprocessImage(size, measure_ink=compare_ink),
                             LogisticSiameseRegression(embedder, compare_ink=compare_ink, random_state=random_state))


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
        are taken, its whitening left out (:func:`fit_whitening` again after), then training goes
        on on ``table``.
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
        rows = valid["_row"].to_numpy()
        callbacks = [WriterEER(images[rows], valid["writer"].to_numpy(), valid["genuine"].to_numpy()),
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
        embedder.module_.set_whitening(None)
    embedder.fit(images[train["_row"].to_numpy()], embedding_targets(train["writer"], train["genuine"]))
    if embedder.interrupted_:
        raise KeyboardInterrupt(f"training interrupted after {len(embedder.history_)} epoch(s)")
    return embedder


_WHITENING_CHUNK = 512  # images copied and embedded at a time by fit_whitening(rows=...)


def fit_whitening(embedder, images, writers, *, rows=None, shrinkage=0.1):
    """Set the embedder's within-writer whitening from genuine signatures of writers it trained on.

    The network's own embeddings of ``images`` give the within-writer covariance
    (:func:`sigest.nn.within_writer_whitening`); the map is stored in the network
    (:meth:`sigest.nn.SiameseResNet.set_whitening`), so that every later embedding, the pair head's
    and the voter's included, is whitened. Measured on unseen writers (``benchmarks/scoring.py
    --whitening``), it lowers the 5-reference EER by about a point on CEDAR and SigComp2011. The
    extra views (:meth:`sigest.nn.SiameseResNet.views`) are whitened the same way, each by its own
    within-writer spread (:meth:`~sigest.nn.SiameseResNet.set_view_whitening`; one map per strip), and the
    local view is centred on the mean of the same images' local descriptors.

    Parameters
    ----------
    embedder : SiameseEmbedder
        Fitted; its current whitening is replaced.
    images : ndarray of shape (n_images, 1, H, W)
        Preprocessed genuine signatures of the training writers (not of the writers whose
        pairs later calibrate the head: those must stay unseen), or a larger set of images from
        which ``rows`` picks them.
    writers : array-like of shape (n_images,)
        Writer of each image.
    rows : array-like of int, optional
        Positions of the images (and writers) to fit on, such as the training writers' genuine
        signatures in a cache of every image; the others are neither copied nor embedded. Default: all.
    shrinkage : float in (0, 1], default=0.1

    Returns
    -------
    embedder : SiameseEmbedder
        The same object.
    """
    module = embedder.module_.set_whitening(None).set_view_whitening(None, None)
    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.intp)
    writers = np.asarray(writers)[rows]
    views, local_sum, positions = [], 0.0, 0  # a few hundred images at a time, not every chosen image at once
    for chunk in np.array_split(rows, max(1, -(-len(rows) // _WHITENING_CHUNK))):
        part = embedder.transform_views(images[chunk], raw_local=True)
        raw = part.pop("local")
        views.append(part)
        local_sum, positions = local_sum + raw.sum((0, 1, 2), dtype=np.float64), positions + np.prod(raw.shape[:3])
    views = {name: torch.as_tensor(np.concatenate([part[name] for part in views])) for name in views[0]}
    codes = torch.as_tensor(pd.factorize(writers)[0])
    module.set_whitening(within_writer_whitening(views["embedding"], codes, shrinkage=shrinkage))
    module.set_view_whitening(
        penultimate=within_writer_whitening(views["penultimate"], codes, shrinkage=shrinkage),
        strips=torch.stack([within_writer_whitening(strip, codes, shrinkage=shrinkage)
                            for strip in views["strips"].unbind(1)]),
        texture=within_writer_whitening(views["texture"], codes, shrinkage=shrinkage),
        local_mean=torch.as_tensor(local_sum / positions, dtype=torch.float32))
    return embedder


def _silent(*args):
    """A sink that prints nothing."""


def _pair_rows(table, **pair_params):
    """:func:`make_pairs` on row numbers: (n_pairs, 2) int array of ``_row`` values and the labels."""
    rows = table[["writer", "genuine"]].assign(path=table["_row"].to_numpy())
    pairs = make_pairs(rows, **pair_params)
    return pairs[["reference", "questioned"]].to_numpy(dtype=int), pairs["label"].to_numpy()


def fit_pair_head(embedder, valid, images, *, ink=None, n_per_writer=40, extra_views=PAIR_VIEWS, local_pooling=1,
                  random_state=0):
    """The pair classifier and its threshold, fitted on writers the embedder never trained on.

    Parameters
    ----------
    embedder : SiameseEmbedder
        Fitted.
    valid : pandas.DataFrame
        Signature table of the validation writers.
    images : ndarray of shape (n_images, 1, H, W)
        Preprocessed images; ``valid["_row"]`` (or, without that column, ``valid.index``) indexes them.
    ink : ndarray of shape (n_images, m) or None, default=None
        The images' ink measures (:meth:`~sigest.preprocessing.PreprocessImage.transform_with_ink`);
        given, the pair classifier also compares ink (``compare_ink=True``).
    n_per_writer : int, default=40
        Balanced pairs of each label per writer (skilled and random forgeries) for the logistic regression.
    extra_views : tuple of str, default=("texture",)
        The pair classifier's ``extra_views``: views whose distance it compares beside the embedding.
    local_pooling : int, default=1
        The pair classifier's ``local_pooling`` (with the ``"local"`` view).
    random_state : int, default=0

    Returns
    -------
    verifier : LogisticSiameseRegression
        Fitted, its ``threshold`` the EER threshold of the validation writers' exhaustive
        genuine/skilled pairs.
    """
    if "_row" not in valid.columns:
        valid = valid.assign(_row=valid.index.to_numpy())
    head_rows, head_labels = _pair_rows(valid, protocol="balanced", forgeries="both", n_per_writer=n_per_writer,
                                        random_state=random_state)
    verifier = LogisticSiameseRegression(FrozenEstimator(embedder), compare_ink=ink is not None,
                                         extra_views=extra_views, local_pooling=local_pooling,
                                         random_state=random_state)
    verifier.fit({"images": images, "ink": ink, "rows": head_rows}, head_labels)  # each image held once
    return verifier.set_params(threshold=_pair_threshold(verifier, valid, images, ink))


def _pair_threshold(verifier, table, images, ink):
    """The EER threshold of a fitted pair classifier on every genuine/skilled pair of ``table``'s writers."""
    from .evaluation import choose_threshold

    rows, labels = _pair_rows(table, forgeries="skilled")
    distinct = np.unique(rows)
    ink = np.asarray(ink)[rows] if verifier.compare_ink else None
    return choose_threshold(labels, verifier.proba_at(verifier.head_views(images[distinct]),
                                                      np.searchsorted(distinct, rows), ink=ink))


def fit_reference_voter(verifier, valid, images, *, ink=None, k=5, n_per_writer=12,
                        extra_views=VOTER_VIEWS, local_pooling=1, random_state=0):
    """The distance-ratio voter over ``k`` references, calibrated on writers the embedder never trained on.

    Parameters
    ----------
    verifier : LogisticSiameseRegression
        Fitted (its embedder is what the voter measures distances with).
    valid : pandas.DataFrame
        Signature table of the validation writers.
    images : ndarray of shape (n_images, 1, H, W)
        Preprocessed images; ``valid["_row"]`` (or, without that column, ``valid.index``) indexes them.
    ink : ndarray of shape (n_images, m) or None, default=None
        The images' ink measures (:meth:`~sigest.preprocessing.PreprocessImage.transform_with_ink`);
        given, the voter also compares ink (``compare_ink=True``).
    k : int, default=5
        References per questioned signature in the calibration rows.
    n_per_writer : int, default=12
        At most this many genuine and this many skilled questioned signatures per writer.
    extra_views : tuple of str, default=("penultimate", "strips", "texture")
        The voter's ``extra_views``.
    local_pooling : int, default=1
        The voter's ``local_pooling`` (with a local view).
    random_state : int, default=0

    Returns
    -------
    voter : VotingVerifier
        ``voting="normalized"``, fitted; its ``threshold`` the EER threshold of the calibrated
        probabilities on these rows.
    """
    X, labels = _reference_rows(valid, images, ink, k, n_per_writer, random_state)
    voter = VotingVerifier(FrozenEstimator(verifier), voting="normalized", compare_ink=ink is not None,
                           extra_views=extra_views, local_pooling=local_pooling).fit(X, labels)
    return _with_voter_threshold(voter, X, labels)


def _reference_rows(table, images, ink, k, n_per_writer, random_state):
    """Rows (questioned, k references) of ``table``'s writers, at most ``n_per_writer`` genuine and as many skilled
    questioned signatures each: (the voter's input ``{"images", "ink", "rows"}``, each image held once and the
    rows (n, 1 + k) as positions in ``images``; labels (n,))."""
    if "_row" not in table.columns:
        table = table.assign(_row=table.index.to_numpy())
    sets = make_reference_sets(table[["writer", "genuine"]].assign(path=table["_row"].to_numpy()), k,
                               random_state=random_state)
    sets = sets.sample(frac=1.0, random_state=random_state).groupby(["writer", "label"]).head(n_per_writer)
    rows = sets[["questioned", *(f"ref_{i}" for i in range(1, k + 1))]].to_numpy(dtype=int)
    return {"images": images, "ink": ink, "rows": rows}, sets["label"].to_numpy()


def _with_voter_threshold(voter, X, labels):
    """The fitted voter with its ``threshold`` set to the EER threshold of its probabilities on rows ``X``."""
    from .evaluation import choose_threshold

    return voter.set_params(threshold=choose_threshold(labels, voter.predict_proba(X)[:, 1]))


def train_verifier(table, *, images=None, ink=None, preprocessor=None, valid_writers=0.15, size=(150, 220),
                   backbone="resnet_tiny", max_epochs=40, patience=8, lr=3e-3, writers_per_batch=32,
                   samples_per_writer=8, local_weight=1.0, whitening="auto", voter_views=VOTER_VIEWS,
                   pair_views=PAIR_VIEWS, local_pooling=1, progress=True, random_state=0, init=None,
                   **embedder_params):
    """Train the full verifier writer-independently and choose its threshold on validation writers.

    1. Hold out ``valid_writers`` of ``table``; train the embedder on the others, keeping the epoch
       with the lowest validation-writer EER (:func:`train_siamese_model`).
    2. Whiten the embedding by the training writers' own spread (:func:`fit_whitening`; see
       ``whitening``).
    3. Fit the logistic regression on balanced pairs (skilled and random forgeries) of the
       validation writers, whom the embedder never trained on, so that its probabilities are
       calibrated for unseen writers.
    4. Set the pipeline's threshold to the EER threshold of the validation writers' exhaustive
       genuine/skilled pairs, so that ``predict`` on unseen writers uses a threshold chosen without them.
    5. Calibrate the distance-ratio voter on the validation writers (:func:`fit_reference_voter`,
       5 references, or fewer where the writers have fewer), kept as ``pipeline.reference_voter_``
       for judging a signature against several references (``perform_voting(...,
       voting="normalized")``, ``sigest verify``).

    The defaults are the recipe measured best in ``benchmarks/recipe.py`` for a CPU-sized model:
    resnet_tiny at 150x220, batch-hard triplets, 32 writers x 8 signatures a batch, lr 3e-3, and
    the local triplet loss beside them (``local_weight``).

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with a ``path`` (or ``image``) column, of the training writers only.
    images : ndarray of shape (n_images, 1, H, W) or None, default=None
        The table's images already preprocessed by ``preprocessor``, row for row (a cache);
        None preprocesses them here, once.
    ink : ndarray of shape (n_images, 2) or None, default=None
        With ``images``, their ink measures (a cache's ``ink``). Measured here when ``images`` is
        None. When known, the pair classifier and the voter compare ink (``compare_ink=True``) and
        the pipeline's preprocessing measures it (``measure_ink=True``).
    preprocessor : PreprocessImage or None, default=None
        The pipeline's preprocessing; None uses ``PreprocessImage(size)``.
    valid_writers : float, int or sequence of str, default=0.15
    size : tuple of int, default=(150, 220)
    backbone : str, default="resnet_tiny"
    max_epochs : int, default=40
    patience : int, default=8
    lr : float, default=3e-3
    writers_per_batch, samples_per_writer : int, default=32, 8
    local_weight : float, default=1.0
        The embedder's ``local_weight``: a :class:`~sigest.nn.LocalMatchTripletLoss` on the second
        stage's local descriptors beside the triplet loss (0: the triplet loss alone). Measured on
        11 writer folds x 2 seeds (README, "Training the local view"), it lowered the voter's and the
        pair head's EER on all three data sets (the voter's with the local view on CEDAR from 5.9 to
        4.6 %), for 1.5 times the training time on a GPU and about 2.2 times a batch's on a 2-core CPU.
    whitening : "auto", float in (0, 1] or None, default="auto"
        The within-writer whitening of the embedding (:func:`fit_whitening`): a float fits it on the
        training writers' genuine signatures with that shrinkage; None keeps the embedding as
        trained; "auto" fits it with shrinkage 0.1, except when fine-tuning (``init``), where the
        starting model's whitening is kept: a few writers estimate it badly (fine-tuning
        sigest-base on 4 writers, then refitting it, raised the EER of 12 other unseen writers
        from 16.6 % unwhitened to 20.5 %; keeping the start's gave 16.2 %).
    voter_views : tuple of str, default=("penultimate", "strips", "texture")
        The voter's ``extra_views`` (:class:`VotingVerifier`); add ``"local_set"`` for the local view
        (``sigest.verification.LOCAL_VOTER_VIEWS``), more accurate and slower (README, "Where the
        strokes are").
    pair_views : tuple of str, default=("texture",)
        The pair classifier's ``extra_views`` (:class:`LogisticSiameseRegression`); add ``"local"`` for the
        local match distance (``sigest.verification.LOCAL_PAIR_VIEWS``): lower single-pair EER, one local
        match a pair.
    local_pooling : int, default=1
        The pair classifier's and the voter's ``local_pooling``: 2 pools the local grids 2 x 2 before
        matching them, about 7x cheaper at some accuracy (README, "Where the strokes are").
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
        Fitted ``preprocess -> verifier`` with ``verifier__threshold`` set, and
        ``pipeline.reference_voter_``, a fitted ``VotingVerifier(voting="normalized")`` (with
        ``compare_ink`` when the ink measures are known) over the verifier that takes preprocessed
        rows (questioned, ref_1, ..., ref_k), k >= 2 (left out, with a warning, when no validation
        writer has 3 genuine signatures and a skilled forgery). ``pipeline.learned_writers_``: the
        writers of ``table`` (and of ``init``), which :func:`calibrate` warns about and
        :func:`sigest.save` records.
    """
    check_writers(table)
    if not (whitening in (None, "auto") or (isinstance(whitening, Real) and 0.0 < whitening <= 1.0)):  # before training
        raise ValueError(f"whitening must be 'auto', None or a shrinkage in (0, 1], got {whitening!r}")
    start = None
    if init is not None:
        start = init[-1].embedder_
        preprocessor = clone(init[0]) if preprocessor is None else preprocessor
        if tuple(preprocessor.size) != tuple(init[0].size):
            raise ValueError(f"images of size {tuple(preprocessor.size)} cannot fine-tune a model made for "
                             f"{tuple(init[0].size)}")
    preprocessor = PreprocessImage(size) if preprocessor is None else preprocessor
    if images is None:
        images, ink = preprocessor.transform_with_ink(_items(table))
    table = _with_rows(table)
    train, valid = _split(table, valid_writers, random_state)
    embedder = train_siamese_model(table, images=images, valid_writers=list(valid["writer"].unique()),
                                   patience=patience, progress=progress, random_state=random_state,
                                   module__backbone=backbone, max_epochs=max_epochs, lr=lr,
                                   writers_per_batch=writers_per_batch, samples_per_writer=samples_per_writer,
                                   local_weight=local_weight, init=start, **embedder_params)
    if whitening == "auto" and start is not None:
        embedder.module_.set_whitening(start.module_.whitening).set_view_whitening(
            start.module_.penultimate_whitening, start.module_.strip_whitening, start.module_.texture_whitening,
            start.module_.local_mean)
    elif whitening is not None:
        own = train[train["genuine"]]
        fit_whitening(embedder, images, table["writer"].to_numpy(), rows=own["_row"].to_numpy(),
                      shrinkage=0.1 if whitening == "auto" else whitening)
    verifier = fit_pair_head(embedder, valid, images, ink=ink, extra_views=tuple(pair_views),
                             local_pooling=local_pooling, random_state=random_state)
    if ink is not None:  # the pipeline measures ink for the verifiers that compare it
        preprocessor = clone(preprocessor).set_params(measure_ink=True)
    pipeline = verifier_pipeline(preprocessor, verifier)
    k = _voter_references(valid, 5)
    if k >= 2:
        pipeline.reference_voter_ = fit_reference_voter(verifier, valid, images, ink=ink, k=k,
                                                        extra_views=tuple(voter_views), local_pooling=local_pooling,
                                                        random_state=random_state)
    else:
        warnings.warn("no validation writer has 3 genuine signatures and a skilled forgery: the distance-ratio "
                      "voter (pipeline.reference_voter_) is left out", stacklevel=2)
    started_from = set() if init is None else _learned_writers(init)
    pipeline.learned_writers_ = sorted(set(qualified_writers(table)) | started_from)
    return pipeline


def _voter_references(table, k):
    """``k``, or fewer where no writer with a skilled forgery has ``k + 1`` genuine signatures (0: none has one)."""
    counts = table.groupby("writer")["genuine"].agg(["sum", "size"])
    counts = counts[counts["size"] > counts["sum"]]  # writers with a skilled forgery
    return min(k, int(counts["sum"].max()) - 1) if len(counts) else 0


def _learned_writers(model):
    """The writers a pipeline was trained or validated on, as far as it knows: those :func:`train_verifier` kept
    (``learned_writers_``) and those its model file lists (``info`` keys ``writers``, ``train_writers``,
    ``valid_writers``); names as :func:`qualified_writers` gives them."""
    info = getattr(model, "sigest_info_", {}).get("info", {})
    listed = [w for key in ("writers", "train_writers", "valid_writers") for w in info.get(key, [])]
    return {str(w) for w in [*getattr(model, "learned_writers_", []), *listed]}


def _warn_if_learned_from(model, table):
    """Warn when writers of ``table`` are among those the model learned from (:func:`_learned_writers`)."""
    seen = sorted(set(qualified_writers(table)) & _learned_writers(model))
    if seen:
        named = ", ".join(seen[:3]) + (", ..." if len(seen) > 3 else "")
        warnings.warn(f"{len(seen)} of the calibration writers ({named}) are writers the model was trained or "
                      "validated on: their forgeries sit farther from their references than a new writer's, so the "
                      "thresholds chosen on them are too strict", stacklevel=3)


def calibrate(model, table, *, images=None, ink=None, k=5, n_per_writer=12, refit_voter=False, random_state=0):
    """Re-choose a fitted verifier's thresholds on writers of your own (a new scanner, script or population).

    A threshold chosen on one population of writers, scanners and scripts does not hold on another:
    the network and its distances travel, the forgeries' difficulty does not. Measured with
    ``benchmarks/calibration.py`` (networks trained on two data sets, the third left out; the README
    gives the table): with CEDAR left out, accuracy at the thresholds of the other sets' validation
    writers was 5 points (5 references) and 17 points (single pairs) below the best threshold's;
    calibrated here on 5 CEDAR writers, the other CEDAR writers' came within 0.8 and 1.4 points.
    Where the model's threshold was already right, 3 to 5 writers give a noisier one (up to 4 points
    lost on Bengali with 3); with 10 the gap was at most 1.3 points on all three sets. The network, its
    whitening and the classifiers' weights are kept; the pair threshold becomes the EER threshold of
    the writers' genuine/skilled pairs, and the distance-ratio voter's (``reference_voter_``) the EER
    threshold of its probabilities on their rows of ``k`` references.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        Fitted (:func:`train_verifier`, :func:`sigest.load`, :func:`sigest.pretrained`). Not changed.
    table : pandas.DataFrame
        Signature table (``path`` or ``image``, ``writer``, ``genuine``) of writers the network never
        trained on, with their skilled forgeries (measured with 3, 5 and 10 writers). A warning names
        those a loaded model's file lists among its training or validation writers (compared by
        :func:`~sigest.datasets.qualified_writers`: ``cedar/12``, from the writer and ``dataset`` columns).
    images : ndarray of shape (n_images, 1, H, W) or None, default=None
        The table's images preprocessed by ``model[0]``, row for row; None preprocesses them here.
    ink : ndarray of shape (n_images, m) or None, default=None
        With ``images``, their ink measures; needed when the model compares ink.
    k : int, default=5
        References per row of the voter's calibration (fewer where the writers have fewer).
    n_per_writer : int, default=12
        At most this many genuine and this many skilled questioned signatures per writer in those rows.
    refit_voter : bool, default=False
        False keeps the voter's weights and re-chooses its threshold, as for the pair classifier;
        True fits the voter's calibration anew on these writers (needed when the model has no voter).
        Refitting its few weights on a few writers lost accuracy on two of the three data sets in
        ``benchmarks/calibration.py``.
    random_state : int, default=0

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        A copy of ``model`` with ``verifier__threshold`` and ``reference_voter_``'s threshold (or,
        with ``refit_voter``, the whole voter) chosen on ``table``.
    """
    check_writers(table)
    _warn_if_learned_from(model, table)
    table = _with_rows(table)
    if table["genuine"].all():
        raise ValueError("calibration needs skilled forgeries of the writers (rows with genuine=False)")
    voter = getattr(model, "reference_voter_", None)
    compares_ink = model[-1].compare_ink or (voter is not None and voter.compare_ink)
    if images is None:
        images, ink = model[0].transform_with_ink(_items(table))
    elif compares_ink and ink is None:
        raise ValueError("the model compares ink: give the images' ink measures (ink=...) with images")
    calibrated = copy.deepcopy(model)
    verifier = calibrated[-1]
    verifier.set_params(threshold=_pair_threshold(verifier, table, images, ink))
    k = _voter_references(table, k)
    if k < 2:
        raise ValueError("the voter's calibration needs writers with 3 genuine signatures and a skilled forgery")
    voter_ink = ink if (model[0].measure_ink if voter is None else voter.compare_ink) else None
    if refit_voter or voter is None:
        calibrated.reference_voter_ = fit_reference_voter(
            verifier, table, images, ink=voter_ink, k=k, n_per_writer=n_per_writer, random_state=random_state,
            extra_views=VOTER_VIEWS if voter is None else tuple(voter.extra_views))
    else:
        X, labels = _reference_rows(table, images, voter_ink, k, n_per_writer, random_state)
        _with_voter_threshold(calibrated.reference_voter_, X, labels)
    return calibrated
