"""Verification estimators: a pair classifier on Siamese features and a vote over k references."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted

from .embedder import SiameseEmbedder
from .nn import local_best_matches, pool_local_descriptors, pooled_reach

__all__ = ["LogisticSiameseRegression", "VotingVerifier", "embed_distinct", "ink_difference", "local_distance_ratio",
           "local_pair_distances", "local_pair_match_distances", "local_set_distance_ratio", "pair_features",
           "pairs_to_targets"]


VECTOR_VIEWS = ("penultimate", "strips", "texture")  # views compared by the Euclidean distance of their rows
LOCAL_VIEWS = ("local", "local_set")  # the local grid compared: local_distance_ratio, local_set_distance_ratio
EXTRA_VIEWS = (*VECTOR_VIEWS, *LOCAL_VIEWS)  # every view the voter can compare beside the embedding
VOTER_VIEWS = VECTOR_VIEWS  # what the voter compares by default (the local view costs speed: see VotingVerifier)
LOCAL_VOTER_VIEWS = (*VOTER_VIEWS, "local_set")  # the same and the local view (sigest train --local-view, sigest-base)
PAIR_VIEWS = ("texture",)  # what the pair classifier compares beside the embedding by default
PAIR_EXTRA_VIEWS = (*VECTOR_VIEWS, "local")  # every view the pair classifier can compare beside the embedding
LOCAL_PAIR_VIEWS = (*PAIR_VIEWS, "local")  # the same and the local view (sigest train --local-view, sigest-base)
LOCAL_REACH = (4, 6)  # the local view's largest match offset, rows and columns of its grid (local_match_distance)


def _pooled_grids(grids, pooling):
    """The local view's grids (p, H, W, C) pooled ``pooling`` x ``pooling`` (:func:`sigest.nn.pool_local_descriptors`)
    and the reach to match them within: (grids, (rows, columns))."""
    if pooling > 1:
        grids = pool_local_descriptors(torch.as_tensor(grids), pooling).numpy()
    return grids, pooled_reach(LOCAL_REACH, pooling)


def pair_features(embeddings):
    """Symmetric features of embedded pairs: ``[|a - b|, a * b]``.

    Parameters
    ----------
    embeddings : ndarray of shape (n_pairs, 2, d)

    Returns
    -------
    features : ndarray of shape (n_pairs, 2 * d)
    """
    a, b = embeddings[:, 0], embeddings[:, 1]
    return np.hstack([np.abs(a - b), a * b])


def ink_difference(ink):
    """``|log measure of the questioned - mean log measure of the references|`` per row and measure.

    Parameters
    ----------
    ink : array-like of shape (n, 1 + k, m) or (n, 1 + k)
        Positive ink measures of the rows' images, questioned first (for a pair, either order), as
        :meth:`sigest.preprocessing.PreprocessImage.transform_with_ink` returns for rows (m=2: ink
        pixels and stroke width); a 2-D array is one measure.

    Returns
    -------
    difference : ndarray of shape (n, m)
    """
    ink = np.asarray(ink, dtype=float)
    if ink.ndim == 2:
        ink = ink[:, :, None]
    if ink.ndim != 3 or ink.shape[1] < 2 or not np.all(ink > 0):
        raise ValueError(f"ink must be positive measures of shape (n, 1 + k, m), got shape {ink.shape}")
    log = np.log(ink)
    return np.abs(log[:, 0] - log[:, 1:].mean(axis=1))


def _split_ink(X):
    """(images, ink) from ``PreprocessImage(measure_ink=True)``'s dict; other input gives (X, None)."""
    if isinstance(X, dict):
        if "images" not in X:
            raise ValueError("dict input needs 'images' (and 'ink'), as PreprocessImage(measure_ink=True) makes it")
        return X["images"], X.get("ink")
    return X, None


def _checked_ink(ink, shape, compare_ink):
    """The ink measures of images of leading ``shape`` (n, k) when ``compare_ink``, else None."""
    if not compare_ink:
        return None
    if ink is None:
        raise ValueError("compare_ink=True needs the images' ink measures: put PreprocessImage(measure_ink=True) "
                         "before this estimator, or pass {'images': ..., 'ink': ...}")
    ink = np.asarray(ink, dtype=float)
    if ink.shape[:2] != tuple(shape):
        raise ValueError(f"ink measures of shape {ink.shape} do not match images of leading shape {tuple(shape)}")
    return ink


def _with_ink(images, ink):
    """Estimator input: the images alone, or with their ink measures as a dict."""
    return images if ink is None else {"images": images, "ink": ink}


def _select(images, ink, index):
    """Estimator input for ``images[index]``, with the matching ink measures when there are any."""
    return _with_ink(images[index], None if ink is None else np.asarray(ink)[index])


def take_rows(embeddings, index):
    """``embeddings[index]`` of an array, or of every array of a dict of views (as ``head_views`` gives them).

    Parameters
    ----------
    embeddings : ndarray of shape (n, ...) or dict of such arrays
    index : array-like of int, of any shape S

    Returns
    -------
    ndarray of shape (*S, ...) or dict of such arrays
    """
    if isinstance(embeddings, dict):
        return {name: value[index] for name, value in embeddings.items()}
    return embeddings[index]


def _head_views(estimator, X):
    """What ``estimator.proba_from_embeddings`` takes for images X: its ``head_views``, else its ``embed``."""
    return getattr(estimator, "head_views", estimator.embed)(X)


def _proba_at(estimator, embedded, at, ink, distances=None):
    """The genuine probability of pairs of embedded images given by their positions.

    embedded: ``_head_views(estimator, images)`` of p images; at (n_pairs, 2) int positions among them; ink
    (n_pairs, 2, m) or None -> (n_pairs,). The estimator's ``proba_at`` where it has one (it need not gather
    every pair's views; ``distances``, {"local": (n_pairs, 2)}, are pair distances known already), else
    ``proba_from_embeddings`` of the gathered pairs, handed the ink when it compares ink.
    """
    if hasattr(estimator, "proba_at"):
        return estimator.proba_at(embedded, at, ink=ink, distances=distances)
    pairs = take_rows(embedded, at)
    if getattr(estimator, "compare_ink", False):
        return estimator.proba_from_embeddings(pairs, ink=ink)
    return estimator.proba_from_embeddings(pairs)


def _as_preprocessed(X, expected):
    """``X`` as a float32 array of preprocessed images, or a ValueError that says what to do."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError):
        X = np.asarray(X, dtype=object)
    if X.dtype == object or X.ndim != 5:
        raise ValueError(
            f"expected preprocessed images of shape {expected}, got an array of shape {X.shape}; "
            "put a PreprocessImage before this estimator to read paths or raw images"
        )
    return X


def _distinct_images(images):
    """Which images are equal, found without hashing every pixel.

    Images are grouped by a sample of about 512 of their pixels and only images in one group are
    compared whole, so that finding the references repeated in every row of (questioned,
    references) costs little beside embedding them.

    Parameters
    ----------
    images : ndarray of shape (n, ...)

    Returns
    -------
    first : ndarray of shape (m,)
        Position of the first of each of the m distinct images.
    number : ndarray of shape (n,)
        Each image's distinct number: ``images[first][number]`` equals ``images``.
    """
    flat = np.asarray(images).reshape(len(images), -1)
    step = max(1, flat.shape[1] // 512)
    groups, first, number = {}, [], np.empty(len(flat), dtype=np.intp)
    for i, image in enumerate(flat):
        group = groups.setdefault(image[::step].tobytes(), [])
        match = next((j for j in group if np.array_equal(flat[first[j]], image)), None)
        if match is None:
            match = len(first)
            group.append(match)
            first.append(i)
        number[i] = match
    return np.array(first, dtype=np.intp), number


def embed_distinct(embed, images):
    """``embed`` applied to each distinct image once, the result spread back to every row.

    Parameters
    ----------
    embed : callable
        Maps (m, 1, H, W) images to (m, d) embeddings, or to a dict of (m, ...) arrays (views).
    images : ndarray of shape (n, 1, H, W)
        May repeat images (a reference shared by several pairs, say).

    Returns
    -------
    embeddings : ndarray of shape (n, d), or dict of (n, ...) arrays
    """
    first, number = _distinct_images(images)
    out = embed(images[first])
    return {name: value[number] for name, value in out.items()} if isinstance(out, dict) else out[number]


class _Rows:
    """Rows (questioned, ref_1, ..., ref_k) held as a pool of images and each row's positions in it.

    An image shared by many rows, such as a writer's references in every row of its questioned
    signatures, is held once: the rows are only gathered from the pool when an estimator that
    cannot embed needs them as pairs.

    Parameters
    ----------
    images : ndarray of shape (p, 1, H, W), float32
    ink : ndarray of shape (p, m) or None
    index : ndarray of shape (n, 1 + k), int
        Row i is ``images[index[i]]``.
    """

    def __init__(self, images, ink, index):
        self.images, self.ink, self.index = images, ink, index

    @property
    def shape(self):
        """(n, 1 + k)."""
        return self.index.shape

    def image_rows(self):
        """The rows' images, gathered: (n, 1 + k, 1, H, W)."""
        return self.images[self.index]

    def ink_rows(self):
        """The rows' ink measures (n, 1 + k, m), or None."""
        return None if self.ink is None else self.ink[self.index]

    def embedded(self, embed):
        """``embed`` of every image the rows use, each distinct image once, spread to the rows.

        ``embed`` maps (m, 1, H, W) to (m, d) or to a dict of (m, ...) arrays; returns (n, 1 + k, d)
        or the dict of (n, 1 + k, ...) arrays.
        """
        out, position = self.embedded_once(embed)
        return {name: value[position] for name, value in out.items()} if isinstance(out, dict) else out[position]

    def embedded_once(self, embed):
        """``embed`` of each distinct image the rows use, (m, ...) or a dict of such arrays, and each row's
        positions among them (n, 1 + k)."""
        used, position = np.unique(self.index, return_inverse=True)
        images = self.images if len(used) == len(self.images) else self.images[used]
        return embed_distinct(embed, images), position.reshape(self.shape)


def _as_rows(X, expected):
    """Estimator input as :class:`_Rows`: rows of images of shape ``expected`` (n, m, 1, H, W), alone or in a
    dict with their ink (n, m, k); or each image once and the rows as positions,
    ``{"images": (p, 1, H, W), "ink": (p, k), "rows": (n, m)}`` (ink optional)."""
    images, ink = _split_ink(X)
    if not (isinstance(X, dict) and "rows" in X):
        images = _as_preprocessed(images, f"{expected}, or a dict of 'images' (p, 1, H, W) and 'rows' (n, m)")
        n, m = images.shape[:2]
        ink = None if ink is None else _checked_ink(ink, (n, m), True)
        return _Rows(images.reshape(n * m, *images.shape[2:]), None if ink is None else ink.reshape(n * m, -1),
                     np.arange(n * m).reshape(n, m))
    images = np.asarray(images, dtype=np.float32)
    index = np.asarray(X["rows"])
    if images.ndim != 4:
        raise ValueError(f"with 'rows', 'images' must be preprocessed images (p, 1, H, W), got shape {images.shape}")
    if index.ndim != 2 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"'rows' must be integer positions in 'images' of shape (n, m), got {index.dtype} of "
                         f"shape {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= len(images)):
        raise ValueError(f"'rows' holds positions outside 0..{len(images) - 1}")
    if ink is not None and np.shape(ink)[:1] != images.shape[:1]:
        raise ValueError(f"ink measures of shape {np.shape(ink)} do not match {len(images)} images")
    return _Rows(images, None if ink is None else np.asarray(ink, dtype=float), index)


def pairs_to_targets(X, y):
    """Recover images and writer labels from labelled pairs, to train an embedder on duplets.

    Identical images are one image. Genuine pairs (label 1) join their two images into one writer;
    the questioned image of a forgery pair (label 0) that is never a reference nor in a genuine
    pair is a skilled forgery of the reference's writer; any other image is genuine.

    Parameters
    ----------
    X : ndarray of shape (n_pairs, 2, 1, H, W)
    y : array-like of shape (n_pairs,), 1 genuine pair, 0 forgery

    Returns
    -------
    images : ndarray of shape (n_images, 1, H, W)
    targets : ndarray of shape (n_images, 2), int64, as :func:`sigest.embedder.embedding_targets`
    """
    flat = X.reshape(-1, *X.shape[2:])
    first, number = _distinct_images(flat)
    images, ids = flat[first], number.reshape(-1, 2)
    parent = list(range(len(images)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    y = np.asarray(y)
    for a, b in ids[y == 1]:
        parent[find(a)] = find(b)
    genuine = np.zeros(len(images), dtype=bool)
    genuine[ids[:, 0]] = True
    genuine[ids[y == 1].ravel()] = True
    writer = np.array([find(i) for i in range(len(images))])
    for a, b in ids[y == 0]:
        if not genuine[b]:
            writer[b] = find(a)
    codes = np.unique(writer, return_inverse=True)[1]
    return images, np.column_stack([codes, genuine]).astype(np.int64)


def _image_pair_tags(tags):
    """Tags of a binary classifier of preprocessed image rows (n, k, 1, H, W), not of 2-D tables."""
    tags.input_tags.two_d_array = False
    tags.classifier_tags.multi_class = False
    tags.target_tags.required = True
    return tags


def _check_pair_labels(y):
    """``y`` as an int array of 0 (forgery) and 1 (genuine), both present, or a ValueError."""
    y = np.asarray(y)
    kind = type_of_target(y)
    if kind != "binary" or set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"y must be binary labels holding both 0 (forgery) and 1 (genuine); got a {kind} target "
                         f"with values {np.unique(y)[:5]}")
    return y.astype(int)


def _check_image_shape(estimator, shape):
    """Refuse images of another shape than the fitted estimator saw."""
    expected = getattr(estimator, "input_shape_", None)
    if expected is not None and tuple(shape) != tuple(expected):
        raise ValueError(f"this verifier was fitted on images of shape {tuple(expected)}, got {tuple(shape)}: "
                         f"preprocess with the same size as in training")


def _embeds(estimator):
    return hasattr(estimator, "embed") and hasattr(estimator, "proba_from_embeddings")


def _is_fitted_net(net):
    return getattr(net, "initialized_", False) and len(getattr(net, "history_", [])) > 0


class LogisticSiameseRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression on the Siamese features of a (reference, questioned) pair.

    Both images are embedded by the Siamese ``embedder``; the features ``[|a - b|, a * b]`` feed a
    logistic regression that says whether the questioned signature is by the reference's writer.
    With ``extra_views`` (by default the texture view), the distance between the two images in each
    of those views of the same forward pass (:meth:`sigest.nn.SiameseResNet.views`) is one more feature.

    Parameters
    ----------
    embedder : SiameseEmbedder, FrozenEstimator or None, default=None
        The embedding network. None builds ``SiameseEmbedder(random_state=random_state)``. An
        unfitted embedder is trained on the pairs (writers recovered by :func:`pairs_to_targets`).
        Wrap a pre-trained one in ``sklearn.frozen.FrozenEstimator`` to use it as it is: ``clone``,
        ``GridSearchCV`` and cross-validation then keep it trained and never refit it. A fitted,
        unwrapped embedder is used as it is by ``fit``, or trained further with ``fine_tune=True``
        (but ``clone`` returns it untrained, as for any scikit-learn estimator).
    fine_tune : bool, default=False
        Train a fitted (not frozen) embedder further on the pairs instead of using it as it is.
    C : float, default=1.0
        Inverse regularisation strength of the logistic regression.
    threshold : float, default=0.5
        ``predict`` says genuine (1) when ``predict_proba(X)[:, 1] >= threshold``; evaluation
        chooses it on validation writers (:func:`sigest.evaluation.choose_threshold`).
    compare_ink : bool, default=False
        Add the pair's :func:`ink_difference` (ink pixels and stroke width on the page, which
        cropping and resizing hide from the network) to the features. ``X`` must then carry the
        measures: ``{"images": ..., "ink": (n_pairs, 2, 2)}``, as ``PreprocessImage(measure_ink=True)``
        makes it. It assumes both images of a pair were scanned alike (same resolution).
    ink_scaling : float, default=10.0
        The ink differences are multiplied by it before the logistic regression, so that its L2
        penalty (``C``), sized for the 2 x d embedding features, shrinks their weights less (as
        ``intercept_scaling`` does for scikit-learn's intercept). Measured with
        ``benchmarks/scoring.py`` (single pairs, 6 writer-fold runs, EER Bengali / CEDAR / Dutch):
        1.0 gave 8.2 / 16.4 / 16.4 %, 10.0 6.4 / 16.3 / 15.3 %; on a data set left out of
        training 10.7 / 20.9 / 17.1 % against 8.7 / 20.1 / 15.5 %. Scalings of 3 and 30 came
        within 0.5 point of 10.
    extra_views : tuple of {"penultimate", "strips", "texture", "local"}, default=("texture",)
        Views whose distance (minus the Euclidean distance between the pair's two whitened views, the
        strips' distances averaged) joins the features, multiplied by ``view_scaling``; ``"local"`` adds
        two: the grids of local descriptors matched position by position within ``LOCAL_REACH``, the
        reference's strokes found in the questioned signature and the questioned one's found in the
        reference (:func:`local_pair_match_distances`). Needs an embedder with ``transform_views``
        (:class:`~sigest.SiameseEmbedder`); ``()`` compares the embedding alone. With the pair head
        fitted as :func:`sigest.training.fit_pair_head` does (with ink), on 22 networks of the 11-fold
        protocol (README), the texture view took the single-pair EER from 6.7 / 15.9 / 11.1 % to
        5.9 / 13.6 / 9.4 % (Bengali / CEDAR / Dutch; CEDAR lower in 18 of 22). Adding ``"local"`` on
        the 22 networks trained with the local loss: 4.53 / 12.07 / 5.87 % -> 4.02 / 10.83 / 5.39 %
        (their mean as one input instead: 4.10 / 11.49 / 5.52 %), at one local match (about 0.3 ms on
        a CPU core) a pair.
    view_scaling : float, default=10.0
        Multiplies the views' distances, for the same reason as ``ink_scaling``: unscaled, the L2
        penalty sized for the 2 x d embedding features shrank their weight and they gained nothing
        (0.1 point in the same measurement). Against 10, a scaling of 3 gave +0.6 / +1.5 / +1.0 points
        and 30 gave -0.2 / -0.3 / +0.2 (the same 22 networks, run-to-run sd 0.7-1.5).
    local_pooling : int, default=1
        With ``"local"``: the grids pooled ``local_pooling`` x ``local_pooling`` before they are matched
        (:func:`sigest.nn.pool_local_descriptors`, within ``LOCAL_REACH`` divided by it, rounded up):
        2 makes a pair's match about 7x cheaper, at some accuracy (README, "Pooled grids").
    random_state : int or None, default=None
        Seed of the default embedder and of the logistic regression.

    Attributes
    ----------
    embedder_ : SiameseEmbedder
        The embedder used (trained here or given fitted).
    classifier_ : LogisticRegression
    classes_ : ndarray of shape (2,)
        ``[0, 1]``: 0 forgery, 1 genuine.
    input_shape_ : tuple of int
        ``(1, H, W)``, the preprocessed image shape seen in ``fit``; other shapes are refused.

    Examples
    --------
    >>> from sigest.datasets import make_signatures, make_pairs
    >>> from sigest.preprocessing import PreprocessImage
    >>> from sigest.embedder import SiameseEmbedder
    >>> data = make_signatures(n_writers=4, n_genuine=4, n_forged=2, image_size=(48, 96), random_state=0)
    >>> pairs = make_pairs(data.table, protocol="balanced", n_per_writer=4, random_state=0)
    >>> X = PreprocessImage(size=(32, 64)).transform(pairs[["reference", "questioned"]])
    >>> net = SiameseEmbedder(module__backbone="resnet_tiny", max_epochs=1, random_state=0)
    >>> clf = LogisticSiameseRegression(net, random_state=0).fit(X, pairs.label)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    _parameter_constraints = {
        "embedder": [HasMethods(["fit", "transform"]), None],
        "fine_tune": ["boolean"],
        "C": [Interval(Real, 0, None, closed="neither")],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "compare_ink": ["boolean"],
        "ink_scaling": [Interval(Real, 0, None, closed="neither")],
        "extra_views": ["array-like"],
        "view_scaling": [Interval(Real, 0, None, closed="neither")],
        "local_pooling": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, embedder=None, *, fine_tune=False, C=1.0, threshold=0.5, compare_ink=False,
                 ink_scaling=10.0, extra_views=PAIR_VIEWS, view_scaling=10.0, local_pooling=1, random_state=None):
        self.embedder = embedder
        self.fine_tune = fine_tune
        self.C = C
        self.threshold = threshold
        self.compare_ink = compare_ink
        self.ink_scaling = ink_scaling
        self.extra_views = extra_views
        self.view_scaling = view_scaling
        self.local_pooling = local_pooling
        self.random_state = random_state

    def __sklearn_tags__(self):
        return _image_pair_tags(super().__sklearn_tags__())

    def _check_pairs(self, X):
        """Checked pairs as :class:`_Rows` of width 2 (reference, questioned)."""
        rows = _as_rows(X, "(n_pairs, 2, 1, H, W)")
        if rows.shape[1] != 2:
            raise ValueError(f"expected pairs (reference, questioned), got rows of {rows.shape[1]} image(s)")
        _check_image_shape(self, rows.images.shape[1:])
        if self.compare_ink:
            _checked_ink(rows.ink_rows(), rows.shape, True)
        return rows

    def fit(self, X, y):
        """Fit the embedder if needed, then the logistic regression.

        Parameters
        ----------
        X : array-like of shape (n_pairs, 2, 1, H, W), or dict
            Preprocessed (reference, questioned) pairs; with ``compare_ink``,
            ``{"images": pairs, "ink": (n_pairs, 2, m)}``. Or each image once and the pairs as
            positions: ``{"images": (p, 1, H, W), "ink": (p, m), "rows": (n_pairs, 2)}`` (ink
            optional), as :class:`VotingVerifier` takes rows.
        y : array-like of shape (n_pairs,)
            1 if the questioned signature is a genuine signature of the reference's writer, 0 if
            it is a forgery.

        Returns
        -------
        self : LogisticSiameseRegression
        """
        self._validate_params()
        _check_view_names(self.extra_views, PAIR_EXTRA_VIEWS)
        self.__dict__.pop("input_shape_", None)
        pairs = self._check_pairs(X)
        y = _check_pair_labels(y)
        if len(y) != pairs.shape[0]:
            raise ValueError(f"y has {len(y)} labels for {pairs.shape[0]} pairs")
        embedder = self.embedder if self.embedder is not None else SiameseEmbedder(random_state=self.random_state)
        if isinstance(embedder, FrozenEstimator):
            self.embedder_ = embedder.estimator
        elif _is_fitted_net(embedder) and not self.fine_tune:
            self.embedder_ = embedder
        else:
            images, targets = pairs_to_targets(pairs.image_rows(), y)
            if _is_fitted_net(embedder):
                self.embedder_ = clone(embedder).initialize()
                self.embedder_.module_.load_state_dict(embedder.module_.state_dict())
                self.embedder_.partial_fit(images, targets)
            else:
                self.embedder_ = clone(embedder).fit(images, targets)
        if self.extra_views and not hasattr(self.embedder_, "transform_views"):
            raise ValueError("extra_views need an embedder with transform_views (SiameseEmbedder); "
                             "set extra_views=() to compare the embedding alone")
        self.classifier_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.random_state)
        self.classifier_.fit(self._pair_features(pairs), y)
        self.classes_ = self.classifier_.classes_
        self.input_shape_ = tuple(pairs.images.shape[1:])
        return self

    def embed(self, X):
        """Embeddings of preprocessed images: (n, 1, H, W) -> (n, d), or (n, k, 1, H, W) -> (n, k, d).

        ``PreprocessImage(measure_ink=True)``'s dict is taken too (its images are embedded).
        """
        check_is_fitted(self)
        return self.embedder_.transform(_split_ink(X)[0])

    def embed_views(self, X):
        """Every view of preprocessed images (n, 1, H, W), as :meth:`SiameseEmbedder.transform_views` gives them.

        Returns
        -------
        views : dict of ndarray
            ``"embedding"`` (n, d), ``"penultimate"`` (n, C), ``"strips"`` (n, n_strips, d),
            ``"texture"`` (n, C_texture), ``"local"`` (n, H', W', C_texture).
        """
        check_is_fitted(self)
        return self.embedder_.transform_views(_split_ink(X)[0])

    def head_views(self, X):
        """What :meth:`proba_from_embeddings` compares, for preprocessed images (n, 1, H, W).

        Returns
        -------
        embeddings : ndarray of shape (n, d), or dict of ndarray
            :meth:`embed` without ``extra_views``; with them, ``{"embedding": (n, d)}`` and each
            extra view (:meth:`embed_views`), from one forward pass.
        """
        check_is_fitted(self)
        if not self.extra_views:
            return self.embed(X)
        views = self.embed_views(X)
        return {name: views[name] for name in ("embedding", *self.extra_views)}

    def _head_inputs(self, embeddings, ink, distances=None):
        """The logistic regression's input: :func:`pair_features` of the embedding, ``view_scaling`` x minus each
        extra view's distance, then ``ink_scaling`` x the ink differences. ``distances``: {view: (n_pairs,) or
        (n_pairs, 2) for the local view} computed already, for views not in ``embeddings``."""
        distances = distances or {}
        views = embeddings if isinstance(embeddings, dict) else {"embedding": embeddings}
        missing = [name for name in ("embedding", *self.extra_views) if name not in views and name not in distances]
        if missing:
            raise ValueError(f"this pair classifier compares the views {['embedding', *self.extra_views]}; "
                             f"{missing} missing (give the dict head_views returns)")
        features = [pair_features(views["embedding"])]
        for name in self.extra_views:
            distance = (distances[name] if name in distances
                        else _pair_view_distance(name, views[name], self.local_pooling))
            features.append(-self.view_scaling * np.asarray(distance).reshape(len(features[0]), -1))
        if ink is not None:
            features.append(self.ink_scaling * ink_difference(ink))
        return np.hstack(features)

    def proba_from_embeddings(self, embeddings, ink=None):
        """Genuine probability of embedded pairs: (n_pairs, 2, d) -> (n_pairs,).

        ``embeddings`` as :meth:`head_views` gives them, for both images of each pair: an array
        (n_pairs, 2, d), or with ``extra_views`` a dict of such arrays (n_pairs, 2, ...), one per view.
        ``ink`` (n_pairs, 2, m), the pairs' ink measures, is required with ``compare_ink``. With the
        ``"local"`` view, :meth:`proba_at` holds each image's grid once instead of twice a pair.
        """
        check_is_fitted(self)
        first = embeddings["embedding"] if isinstance(embeddings, dict) else embeddings
        ink = _checked_ink(ink, first.shape[:2], self.compare_ink)
        return self.classifier_.predict_proba(self._head_inputs(embeddings, ink))[:, 1]

    def proba_at(self, embedded, at, ink=None, distances=None):
        """Genuine probability of pairs of embedded images given by their positions: (n_pairs,).

        Parameters
        ----------
        embedded : ndarray of shape (p, d) or dict of ndarray
            :meth:`head_views` of p images, each once.
        at : array-like of shape (n_pairs, 2), int
            Each pair's (reference, questioned) positions among them.
        ink : ndarray of shape (n_pairs, 2, m) or None
            The pairs' ink measures, required with ``compare_ink``.
        distances : dict or None
            ``{"local": (n_pairs, 2)}``: the pairs' :func:`local_pair_match_distances` (of the grids
            pooled by ``local_pooling``), computed already (:class:`VotingVerifier` has them from its own
            matches), instead of matching the grids again.

        Returns
        -------
        probability : ndarray of shape (n_pairs,)
        """
        check_is_fitted(self)
        at = np.asarray(at, dtype=np.intp).reshape(-1, 2)
        ink = _checked_ink(ink, at.shape, self.compare_ink)
        return self.classifier_.predict_proba(self._inputs_at(embedded, at, ink, distances))[:, 1]

    def _inputs_at(self, embedded, at, ink, distances=None):
        """:meth:`_head_inputs` of pairs given as positions ``at`` (n_pairs, 2) among embedded images; the local
        view's grids are compared where they lie, never gathered two per pair, unless ``distances`` holds it."""
        if not isinstance(embedded, dict) or "local" not in self.extra_views:
            return self._head_inputs(take_rows(embedded, at), ink)
        distances = dict(distances or {})
        if "local" not in distances:
            grids, reach = _pooled_grids(embedded["local"], self.local_pooling)
            distances["local"] = local_pair_match_distances(grids, at[:, 0], at[:, 1], reach)
        gathered = {name: value[at] for name, value in embedded.items() if name != "local"}
        return self._head_inputs(gathered, ink, distances)

    def _pair_features(self, pairs):
        """The logistic regression's input for checked pairs (:class:`_Rows`), each distinct image embedded once."""
        embedded, at = pairs.embedded_once(self.head_views)
        return self._inputs_at(embedded, at, pairs.ink_rows() if self.compare_ink else None)

    def _features(self, X):
        check_is_fitted(self)
        return self._pair_features(self._check_pairs(X))

    def decision_function(self, X):
        """Log-odds that the questioned signature is genuine: (n_pairs, 2, 1, H, W) -> (n_pairs,)."""
        features = self._features(X)
        return self.classifier_.decision_function(features)

    def predict_proba(self, X):
        """Probabilities of shape (n_pairs, 2): column 0 forgery, column 1 genuine."""
        features = self._features(X)
        return self.classifier_.predict_proba(features)

    def predict(self, X):
        """1 (genuine) where the genuine probability reaches ``threshold``, else 0: (n_pairs,)."""
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(int)



def _pair_view_distance(name, V, local_pooling=1):
    """Distance of each pair in one view, V (n_pairs, 2, ...) -> (n_pairs,), or (n_pairs, 2) for the local view
    (:func:`local_pair_match_distances` of the grids pooled by ``local_pooling``, each way); the others' Euclidean
    (averaged over the strips)."""
    if name == "local":
        n = len(V)
        grids, reach = _pooled_grids(V.reshape(2 * n, *V.shape[2:]), local_pooling)
        return local_pair_match_distances(grids, np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), reach)
    return np.linalg.norm(V[:, 0] - V[:, 1], axis=-1).reshape(len(V), -1).mean(axis=1)


def _check_view_names(names, allowed=EXTRA_VIEWS):
    unknown = set(names) - set(allowed)
    if unknown:
        raise ValueError(f"extra_views must name views among {allowed}, got {sorted(unknown)}")


def local_pair_distances(grids, first, second, reach=LOCAL_REACH, chunk=256):
    """:func:`sigest.nn.local_match_distance` of the grids ``grids[first[i]]`` and ``grids[second[i]]``: (n_pairs,).

    grids (p, H, W, C), one per distinct image; first, second (n_pairs,) int. The pairs' grids are
    gathered ``chunk`` pairs at a time, not all at once. The mean of :func:`local_pair_match_distances`'s
    two ways.
    """
    return local_pair_match_distances(grids, first, second, reach, chunk).mean(axis=1)


def local_pair_match_distances(grids, first, second, reach=LOCAL_REACH, chunk=256):
    """Each pair's local match distance one way and the other: (n_pairs, 2).

    Column 0: one minus the weighted best-match similarity of the positions of ``grids[first[i]]``
    matched in ``grids[second[i]]`` (:func:`sigest.nn.local_best_matches`); column 1: the same of
    the second's positions matched in the first. Their mean is :func:`sigest.nn.local_match_distance`.
    For a (reference, questioned) pair: the reference's strokes found in the questioned signature, and
    the questioned signature's strokes found in the reference.
    """
    def compare(a, b):
        forward, backward = local_best_matches(a, b, reach)
        return np.column_stack([1 - (forward * a.norm(dim=3)).sum((1, 2)).numpy(),
                                1 - (backward * b.norm(dim=3)).sum((1, 2)).numpy()])

    return _in_chunks(compare, grids, first, second, chunk)


def _in_chunks(compare, grids, first, second, chunk=256):
    """``compare(grids[first], grids[second])`` (tensors in; an array or a tuple of arrays out), ``chunk`` pairs
    at a time (68 KB an image for resnet_tiny at 150x220), concatenated."""
    starts = range(0, max(len(first), 1), chunk)  # no pair: one empty call, for outputs of the right shapes
    parts = [compare(torch.as_tensor(grids[first[i:i + chunk]]), torch.as_tensor(grids[second[i:i + chunk]]))
             for i in starts]
    return tuple(map(np.concatenate, zip(*parts))) if isinstance(parts[0], tuple) else np.concatenate(parts)


def local_distance_ratio(grids, position, reach=LOCAL_REACH):
    """The local view's distance ratio, as :class:`VotingVerifier` computes it: (n,).

    The questioned image's mean :func:`sigest.nn.local_match_distance` to the k references over the
    references' mean mutual one (the writer's own spread sets the scale).

    Parameters
    ----------
    grids : ndarray of shape (p, H, W, C)
        The local view of each distinct image.
    position : ndarray of shape (n, 1 + k), int, k >= 2
        Each row's images (questioned, ref_1, ..., ref_k) among ``grids``; a pair of images that
        several rows share (two references of one writer) is compared once.

    Returns
    -------
    ratio : ndarray of shape (n,)
    """
    n, m = position.shape
    i, j = np.triu_indices(m - 1, k=1)
    refs = position[:, 1:]
    pairs = np.concatenate([np.stack([np.repeat(position[:, 0], m - 1), refs.ravel()], axis=1),
                            np.stack([refs[:, i].ravel(), refs[:, j].ravel()], axis=1)])
    distinct, inverse = np.unique(np.sort(pairs, axis=1), axis=0, return_inverse=True)
    distance = local_pair_distances(grids, distinct[:, 0], distinct[:, 1], reach)[inverse.ravel()]
    questioned = distance[:n * (m - 1)].reshape(n, m - 1).mean(axis=1)
    spread = distance[n * (m - 1):].reshape(n, len(i)).mean(axis=1)
    return questioned / np.maximum(spread, 1e-6)


def local_set_distance_ratio(grids, position, reach=LOCAL_REACH, rows_at_a_time=512):
    """The local view's distance ratio with the references taken together: (n,).

    The questioned image's positions are matched in all k references at once (each position's best
    match within ``reach`` in any of them, :func:`sigest.nn.local_best_matches`) and the references'
    in the questioned one (a mean over references); each reference plays the questioned image
    against the other references to give the scale. With weights ``w`` (the positions' norms) and
    ``best(x, Y)`` a position's best similarity in the images ``Y``::

        d(x, Y) = 1 - sum_p w_x(p) best(x, Y)(p)
        ratio = [d(q, R) + mean_r d(r, {q})] / [mean_r d(r, R - {r}) + mean_{r != s} d(r, {s})]

    A stroke of a genuine signature drawn as in any one of the references matches, where the mean
    of pairwise distances (:func:`local_distance_ratio`) asks it to match each. Measured with the
    voter's other views and ink (22 networks of the 11-fold protocol trained with the local loss, k=5,
    5 reference draws, EER Bengali / CEDAR / Dutch): 1.21 / 4.29 / 1.43 % against 1.28 / 4.64 / 1.57 %
    with :func:`local_distance_ratio` (CEDAR lower in 17 of the 22 runs). Same cost: the same pairs
    are compared.

    Parameters
    ----------
    grids : ndarray of shape (p, H, W, C)
        The local view of each distinct image.
    position : ndarray of shape (n, 1 + k), int, k >= 2
        Each row's images (questioned, ref_1, ..., ref_k) among ``grids``; a pair of images that
        rows share is compared once (among ``rows_at_a_time`` rows).
    reach : (int, int), default=LOCAL_REACH
    rows_at_a_time : int, default=512
        Rows scored together (memory: their pairs' matches, about 15 x 532 floats a row at k=5).

    Returns
    -------
    ratio : ndarray of shape (n,)
    """
    return _local_set_ratio_and_pairs(grids, position, reach, rows_at_a_time)[0]


def _local_set_ratio_and_pairs(grids, position, reach=LOCAL_REACH, rows_at_a_time=512):
    """:func:`local_set_distance_ratio` (n,), and from the same matches each (reference, questioned) pair's
    :func:`local_pair_match_distances` (n, k, 2)."""
    position = np.asarray(position)
    if position.ndim != 2 or position.shape[1] < 3:
        raise ValueError(f"position must be rows (questioned, ref_1, ..., ref_k), k >= 2; got shape {position.shape}")
    parts = [_local_set_ratio(grids, position[start:start + rows_at_a_time], reach)
             for start in range(0, len(position), rows_at_a_time)]
    if not parts:
        return np.zeros(0), np.zeros((0, position.shape[1] - 1, 2))
    return tuple(np.concatenate(part) for part in zip(*parts))


def _local_set_ratio(grids, position, reach):
    """:func:`_local_set_ratio_and_pairs` of a few rows, each distinct pair of images matched once."""
    n, m = position.shape
    k = m - 1
    questioned, refs = position[:, 0], position[:, 1:]
    first, second = np.nonzero(~np.eye(k, dtype=bool))  # the ordered pairs of distinct references
    oriented = np.concatenate([np.column_stack([np.repeat(questioned, k), refs.ravel()]),  # q in each reference
                               np.column_stack([refs.ravel(), np.repeat(questioned, k)]),  # each reference in q
                               np.column_stack([refs[:, first].ravel(), refs[:, second].ravel()])])
    distinct, inverse = np.unique(np.sort(oriented, axis=1), axis=0, return_inverse=True)
    def matches(a, b):  # each position's best similarity, both ways: (pairs, H W) each
        return tuple(best.flatten(1).numpy() for best in local_best_matches(a, b, reach))

    forward, backward = _in_chunks(matches, grids, distinct[:, 0], distinct[:, 1])
    inverse = inverse.ravel()
    best = np.where((oriented[:, 0] <= oriented[:, 1])[:, None], forward[inverse], backward[inverse])  # (pairs, P)
    used, slot = np.unique(position, return_inverse=True)  # the positions' weights of these rows' images only
    weight = np.linalg.norm(grids[used].reshape(len(used), -1, grids.shape[-1]), axis=2)[slot.reshape(n, m)]
    q_weight, ref_weight = weight[:, 0], weight[:, 1:]  # (n, P), (n, k, P)
    q_in_refs, refs_in_q, ref_in_ref = np.split(best, [n * k, 2 * n * k])
    q_in_each = (q_in_refs.reshape(n, k, -1) * q_weight[:, None]).sum(axis=2)  # (n, k): q matched in each reference
    each_in_q = (refs_in_q.reshape(n, k, -1) * ref_weight).sum(axis=2)  # each reference matched in q
    pair_distance = np.stack([1 - each_in_q, 1 - q_in_each], axis=2)  # (reference, questioned) pairs, each way
    q_in_refs = q_in_refs.reshape(n, k, -1).max(axis=1)
    refs_in_q = 1 - each_in_q.mean(axis=1)
    ref_in_ref = ref_in_ref.reshape(n, k, k - 1, -1)  # row, reference, other reference (first, second: row-major)
    ref_in_others = 1 - (ref_in_ref.max(axis=2) * ref_weight).sum(axis=2).mean(axis=1)
    ref_in_each = 1 - (ref_in_ref * ref_weight[:, :, None]).sum(axis=3).mean(axis=(1, 2))
    numerator = (1 - (q_in_refs * q_weight).sum(axis=1)) + refs_in_q
    return numerator / np.maximum(ref_in_others + ref_in_each, 1e-6), pair_distance


def _distance_ratio(E):
    """Mean questioned-to-reference distance over the references' mean mutual distance.

    Parameters
    ----------
    E : ndarray of shape (n, 1 + k, d), k >= 2
        Embedded rows (questioned, ref_1, ..., ref_k).

    Returns
    -------
    ratio : ndarray of shape (n,)
    """
    questioned = np.linalg.norm(E[:, 1:] - E[:, :1], axis=2).mean(axis=1)
    i, j = np.triu_indices(E.shape[1] - 1, k=1)
    spread = np.linalg.norm(E[:, 1:][:, i] - E[:, 1:][:, j], axis=2).mean(axis=1)
    return questioned / np.maximum(spread, 1e-6)


class VotingVerifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Judge a questioned signature against several genuine references of the claimed writer.

    Each row of ``X`` is ``(questioned, ref_1, ..., ref_k)``. The questioned signature is scored
    against every reference by the pair ``estimator``; ``voting="soft"`` averages the genuine
    probabilities, ``voting="hard"`` takes the majority of the per-reference decisions. When the
    estimator can embed images (``embed`` and ``proba_from_embeddings``, as
    :class:`LogisticSiameseRegression`), every distinct image is embedded once and reused.

    ``voting="normalized"`` scores by embedding distances measured against the claimed writer's own
    variability: the questioned signature's mean distance to the references divided by the
    references' mean mutual distance (k >= 2), mapped to a probability by a logistic calibration
    fitted in ``fit``. A writer who signs loosely is allowed more distance than a careful one, so
    one threshold travels better across writers, scripts and scanners (measured in
    ``benchmarks/recipe.py``: 5-reference EER 12.8 % against 17.8 % unnormalised on CEDAR test writers,
    and accuracy at the validation-chosen threshold within about 1 point of the test oracle's).

    Parameters
    ----------
    estimator : classifier
        A pair classifier taking (n_pairs, 2, 1, H, W). Cloned and fitted on the rows' pairs in
        ``fit``; wrap a fitted one in ``sklearn.frozen.FrozenEstimator`` to keep it as it is (the
        rows' pairs are then not built: measured on 18 writers x 24 rows of 5 references at 150x220,
        the calibration's peak memory fell by about 490 MB).
    voting : {"soft", "hard", "normalized"}, default="soft"
        ``"hard"``: each reference votes with the pair estimator's own decision (its ``predict``,
        i.e. its tuned ``threshold``), as scikit-learn's ``VotingClassifier`` does.
        ``"normalized"``: the calibrated distance ratio described above (needs an estimator that
        embeds, and ``fit`` on rows of writers the embedder did not train on).
    threshold : float, default=0.5
        Genuine when the mean probability (soft) or the share of genuine votes (hard) reaches it.
    compare_ink : bool, default=False
        With ``voting="normalized"``: also compare the questioned signature's ink on the page with
        the references' (:func:`ink_difference` of the amount of ink and of the stroke width, more
        inputs of the calibration), which cropping and resizing hide from the network. ``X`` must
        then carry the measures: ``{"images": rows, "ink": (n, 1 + k, m)}``, as
        ``PreprocessImage(measure_ink=True)`` makes it. Measured
        with ``benchmarks/scoring.py`` (3 writer folds x 5 reference draws, k=5, EER Bengali /
        CEDAR / Dutch): see the README's table. It assumes references and questioned signatures
        were scanned alike (same resolution).
    extra_views : tuple of {"penultimate", "strips", "texture", "local", "local_set"}, \
            default=("penultimate", "strips", "texture")
        With ``voting="normalized"``: more views of the same images beside the embedding
        (:meth:`sigest.nn.SiameseResNet.views`, needs an estimator with ``embed_views``), each giving
        its own log distance ratio as one more input of the calibration (the strips' log ratios
        averaged into one). They come from the same forward pass and need no training. Measured
        with ``benchmarks/views.py`` on 30 runs of the resnet_tiny recipe (5 writer folds x 2 seeds
        x 3 training variants, 5 reference draws each; k=5 with ink; EER Bengali / CEDAR / Dutch):
        see the README's table; the texture view (model format 3 on) measured on 22 networks of the
        11-fold protocol (-0.2 / -0.0 / -0.5 points) and on the three cross-data-set runs (-1.3 /
        -0.7 / -1.4). ``()`` scores by the embedding alone, as model files of format 1 do.
        ``"local"`` (model format 4 on) compares the second stage's map position by position, each
        position matched to its best counterpart within ``LOCAL_REACH`` (4 rows, 6 columns of the
        19 x 28 grid) by :func:`sigest.nn.local_match_distance`, the ratio taken over the references'
        own mutual distances (:func:`local_distance_ratio`); pairs of images that rows share are
        compared once. ``"local_set"`` compares the same grids with the references taken together
        (:func:`local_set_distance_ratio`: each position of the questioned signature matched in any
        reference; model format 5 on; lower EER than ``"local"`` at the same cost, measured there); ``sigest train
        --local-view`` and ``sigest-base`` use it. Neither is in the default because they cost speed:
        see the README ("Where the strokes are").
    C : float, default=100.0
        Inverse L2 regularisation of the calibration (``voting="normalized"``). It fits one weight
        per view and two for the ink on hundreds of rows, and the ink differences are small numbers
        (about 0.1) that need large weights: scikit-learn's default ``C=1`` shrank them. Measured with
        ``benchmarks/scoring.py`` (k=5 with ink, 6 writer-fold runs x 5 reference draws, EER
        Bengali / CEDAR / Dutch): ``C=1`` 5.6 / 9.2 / 9.8 %, ``C=100`` 4.7 / 8.5 / 8.9 %; on a data
        set left out of training 14.6 / 12.1 / 10.4 % against 6.9 / 11.6 / 8.8 %. In a sweep over
        1, 10, 100 and 1000, each step up to 100 gained on every set; 1000 gained 0.2-0.9 point
        more on Bengali only.
    local_pooling : int, default=1
        With ``"local"`` or ``"local_set"``: the grids pooled ``local_pooling`` x ``local_pooling``
        before they are matched (:func:`sigest.nn.pool_local_descriptors`, within ``LOCAL_REACH``
        divided by it, rounded up). 2 (``sigest-base-fast``) makes the matching about 7x cheaper; its
        accuracy: README, "Pooled grids". :meth:`verify` hands its pair matches to a pair
        estimator that pools as it does, and lets any other match the grids its own way.

    Attributes
    ----------
    estimator_ : classifier
        The fitted pair classifier.
    calibrator_ : LogisticRegression
        With ``voting="normalized"``: maps ``log(distance ratio)`` (and, with ``compare_ink``,
        the ink difference) to the genuine probability.
    n_references_ : int
        References per row seen in ``fit``. ``voting="normalized"`` takes rows with any count k >= 2:
        the ratio's genuine/forgery boundary barely moves with k (one writer fold, 28 test writers:
        the equal-error ratio is 1.35 at k=2, 1.30 at k=5 and 1.26 at k=10, and a threshold chosen
        at k=5 cost at most 0.7 points of accuracy at k=2..10 against the test oracle). Its error
        falls as k grows; with k=2 the spread is one distance, a noisy yardstick, and the raw mean
        distance does better (``benchmarks/scoring.py``, 3 writer folds, EER Bengali / CEDAR /
        Dutch: k=2 ratio 18.0 / 18.8 / 18.8 % against raw 13.5 / 16.9 / 17.6 %; k=3 ratio 12.8 /
        15.0 / 13.7 % against raw 12.7 / 16.4 / 16.4 %; k=5 9.4 / 12.0 / 11.6 %; k=10 7.7 / 9.7 /
        9.2 %).
    classes_ : ndarray of shape (2,)
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
        "voting": [StrOptions({"soft", "hard", "normalized"})],
        "threshold": [Interval(Real, 0, 1, closed="both")],
        "compare_ink": ["boolean"],
        "extra_views": ["array-like"],
        "C": [Interval(Real, 0, None, closed="neither")],
        "local_pooling": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, estimator, *, voting="soft", threshold=0.5, compare_ink=False,
                 extra_views=VOTER_VIEWS, C=100.0, local_pooling=1):
        self.estimator = estimator
        self.voting = voting
        self.threshold = threshold
        self.compare_ink = compare_ink
        self.extra_views = extra_views
        self.C = C
        self.local_pooling = local_pooling

    def __sklearn_tags__(self):
        return _image_pair_tags(super().__sklearn_tags__())

    @staticmethod
    def _check_rows(X):
        """Checked input as :class:`_Rows`: rows of images (n, 1 + k, 1, H, W) (in a dict with their ink
        (n, 1 + k, m)), or ``{"images": (p, 1, H, W), "ink": (p, m), "rows": (n, 1 + k)}``."""
        rows = _as_rows(X, "(n, 1 + k, 1, H, W) rows (questioned, ref_1, ..., ref_k)")
        if rows.shape[1] < 2:
            raise ValueError(f"each row needs a questioned signature and at least one reference, got rows of "
                             f"{rows.shape[1]} image(s)")
        return rows

    @staticmethod
    def _as_pairs(X):
        """(n, 1 + k, ...) rows -> (n * k, 2, ...) (reference, questioned) pairs, row-major; None stays None."""
        if X is None:
            return None
        n, m = X.shape[:2]
        questioned = np.repeat(X[:, :1], m - 1, axis=1)
        return np.stack([X[:, 1:], questioned], axis=2).reshape(n * (m - 1), 2, *X.shape[2:])

    def fit(self, X, y):
        """Fit the pair estimator on every (reference, questioned) pair of the rows.

        Parameters
        ----------
        X : array-like of shape (n, 1 + k, 1, H, W), or dict
            Rows (questioned, ref_1, ..., ref_k); ``{"images": rows, "ink": (n, 1 + k, m)}`` to
            compare ink (here or in the pair estimator); or each image once and the rows as its
            positions, ``{"images": (p, 1, H, W), "ink": (p, m), "rows": (n, 1 + k)}`` (ink
            optional), which holds a reference shared by many rows once.
        y : array-like of shape (n,), 1 genuine questioned signature, 0 forgery

        Returns
        -------
        self : VotingVerifier
        """
        self._validate_params()
        _check_view_names(self.extra_views)
        rows = self._check_rows(X)
        y = np.asarray(y).astype(int)
        if len(y) != rows.shape[0]:
            raise ValueError(f"y has {len(y)} labels for {rows.shape[0]} rows")
        if isinstance(self.estimator, FrozenEstimator):  # fitting it is a no-op: skip copying every pair
            self.estimator_ = clone(self.estimator)
        else:
            pairs = _with_ink(self._as_pairs(rows.image_rows()), self._as_pairs(rows.ink_rows()))
            self.estimator_ = clone(self.estimator).fit(pairs, np.repeat(y, rows.shape[1] - 1))
        self.classes_ = np.array([0, 1])
        self.n_references_ = rows.shape[1] - 1
        if self.voting == "normalized":
            if set(np.unique(y)) != {0, 1}:
                raise ValueError("voting='normalized' calibrates on rows of both labels, 0 (forgery) and 1 (genuine)")
            self.calibrator_ = LogisticRegression(C=self.C).fit(self._scores(rows)[0], y)
        return self

    def _checked_rows(self, X):
        """:meth:`_check_rows` of a fitted voter, refusing images of another shape than the estimator saw."""
        check_is_fitted(self)
        rows = self._check_rows(X)
        _check_image_shape(self.estimator_, rows.images.shape[1:])
        return rows

    def reference_probabilities(self, X):
        """Genuine probability of the questioned signature against each reference: (n, k).

        ``X`` as in :meth:`fit`.
        """
        rows = self._checked_rows(X)
        n, m = rows.shape
        if not _embeds(self.estimator_):
            pairs = _with_ink(self._as_pairs(rows.image_rows()), self._as_pairs(rows.ink_rows()))
            return self.estimator_.predict_proba(pairs)[:, 1].reshape(n, m - 1)
        embedded, position = rows.embedded_once(lambda X: _head_views(self.estimator_, X))
        return self._pair_probabilities(embedded, position, rows.ink_rows())

    def _pair_probabilities(self, embedded, position, ink, local=None):
        """The pair estimator's genuine probability of each (reference, questioned) pair of embedded rows.

        embedded: each distinct image's embedding (p, d), or a dict of its views (p, ...) holding at least the
        ones the estimator compares (its ``head_views``); position (n, 1 + k) the rows' images among them; ink
        (n, 1 + k, m) or None; local (n, k, 2): each pair's local match distances each way, if known -> (n, k).
        """
        if isinstance(embedded, dict):
            names = ("embedding", *getattr(self.estimator_, "extra_views", ()))
            # a pair classifier of the embedding alone takes the array
            embedded = {name: embedded[name] for name in names} if len(names) > 1 else embedded["embedding"]
        n, m = position.shape
        at = self._as_pairs(position)
        distances = None if local is None else {"local": local.reshape(-1, 2)}  # row-major, as the pairs
        return _proba_at(self.estimator_, embedded, at, self._as_pairs(ink), distances).reshape(n, m - 1)

    def distance_ratio(self, X):
        """Mean questioned-to-reference distance over the references' mean mutual distance: (n,).

        Parameters
        ----------
        X : array-like of shape (n, 1 + k, 1, H, W), k >= 2, or dict as in :meth:`fit`
        """
        check_is_fitted(self)
        rows = self._check_rows(X)
        self._check_ratio_rows(rows)
        return _distance_ratio(rows.embedded(self.estimator_.embed))

    def _check_ratio_rows(self, rows):
        if rows.shape[1] < 3 or not _embeds(self.estimator_):
            raise ValueError("the distance ratio needs an estimator that embeds and at least 2 references per row")
        if self.extra_views and not hasattr(self.estimator_, "embed_views"):
            raise ValueError("extra_views need an estimator with embed_views (LogisticSiameseRegression); "
                             "set extra_views=() to score by the embedding alone")

    def _row_views(self, rows):
        """The views of :class:`_Rows`, each distinct image embedded once: ({"embedding": (p, d), then each of
        ``extra_views`` and of the pair estimator's: (p, ...), the local grid (p, H, W, C) under each of
        ``LOCAL_VIEWS``}, the rows' positions among the p images (n, 1 + k))."""
        self._check_ratio_rows(rows)
        names = dict.fromkeys(("embedding", *self.extra_views, *getattr(self.estimator_, "extra_views", ())))
        if len(names) == 1:
            embedding, position = rows.embedded_once(self.estimator_.embed)
            return {"embedding": embedding}, position
        views, position = rows.embedded_once(self.estimator_.embed_views)
        return {name: views["local" if name in LOCAL_VIEWS else name] for name in names}, position

    def _log_ratios(self, views, position):
        """(n, 1 + number of extra_views) log distance ratios of the embedding and ``extra_views``, in that order,
        of the rows ``position`` (n, 1 + k) among the images of ``views`` (:meth:`_row_views`); and, with
        ``"local_set"``, each (reference, questioned) pair's local match distances each way from the same matches
        (n, k, 2), else None."""
        columns, pairs = [], None
        for name in ("embedding", *self.extra_views):
            if name in LOCAL_VIEWS:
                grids, reach = _pooled_grids(views[name], self.local_pooling)
                if name == "local":
                    ratio = local_distance_ratio(grids, position, reach)
                else:
                    ratio, pairs = _local_set_ratio_and_pairs(grids, position, reach)
                columns.append(np.log(np.maximum(ratio, 1e-6)))
                continue
            V = views[name][position]
            parts = [V] if V.ndim == 3 else [V[:, :, i] for i in range(V.shape[2])]  # strips: one ratio each
            columns.append(np.mean([np.log(np.maximum(_distance_ratio(part), 1e-6)) for part in parts], axis=0))
        return np.column_stack(columns), pairs

    def _scores(self, rows):
        """The calibration's inputs of :class:`_Rows`: (n, 1 + v) log distance ratios (embedding, extra views),
        then the ink differences; and the views and positions (:meth:`_row_views`) they came from, with the pairs'
        local match distances (:meth:`_log_ratios`)."""
        views, position = self._row_views(rows)
        log_ratios, local = self._log_ratios(views, position)
        if self.compare_ink:
            log_ratios = np.column_stack([log_ratios, ink_difference(_checked_ink(rows.ink_rows(), rows.shape, True))])
        return log_ratios, (views, position, local)

    def reference_votes(self, per_reference):
        """Each reference's decision (1 genuine) from its probability: the pair estimator's ``predict`` rule.

        Parameters
        ----------
        per_reference : ndarray of shape (n, k)
            As :meth:`reference_probabilities` returns.
        """
        return (per_reference >= getattr(self.estimator_, "threshold", 0.5)).astype(int)

    def combine(self, per_reference):
        """Soft or hard vote over per-reference probabilities (n, k) -> genuine score (n,).

        The mean probability (soft) or the share of references accepting it (hard); use it to
        decide from probabilities already computed with :meth:`reference_probabilities`.
        """
        if self.voting == "normalized":
            raise ValueError("voting='normalized' scores distances, not per-reference probabilities")
        if self.voting == "hard":
            return self.reference_votes(per_reference).mean(axis=1)
        return per_reference.mean(axis=1)

    def _calibrated(self, X):
        """``voting="normalized"``: (calibrated genuine probability (n,), the rows' views, positions and local
        pair distances (:meth:`_scores`), their ink or None)."""
        rows = self._checked_rows(X)
        scores, embedded = self._scores(rows)
        return self.calibrator_.predict_proba(scores)[:, 1], embedded, rows.ink_rows()

    def predict_proba(self, X):
        """Combined probabilities of shape (n, 2): column 1 genuine (mean probability, vote share or calibrated)."""
        score = self._calibrated(X)[0] if self.voting == "normalized" else self.combine(self.reference_probabilities(X))
        return np.column_stack([1 - score, score])

    def verify(self, X):
        """The combined genuine probability and each reference's own, from one embedding of each distinct image.

        Parameters
        ----------
        X : array-like of shape (n, 1 + k, 1, H, W), or dict
            Rows (questioned, ref_1, ..., ref_k), as in :meth:`fit`.

        Returns
        -------
        probability : ndarray of shape (n,)
            Column 1 of :meth:`predict_proba`: the mean probability (soft), the share of genuine
            votes (hard) or the calibrated probability (normalized).
        per_reference : ndarray of shape (n, k)
            :meth:`reference_probabilities`: the evidence. With ``voting="normalized"`` it comes
            from the same embeddings as the calibrated probability, not from a second pass.
        """
        if self.voting != "normalized":
            per_reference = self.reference_probabilities(X)
            return self.combine(per_reference), per_reference
        probability, (views, position, local), ink = self._calibrated(X)
        if getattr(self.estimator_, "local_pooling", 1) != self.local_pooling:  # the pair head matches other grids
            local = None
        return probability, self._pair_probabilities(views, position, ink, local)

    def predict(self, X):
        """1 (genuine) or 0 (forgery) per row: (n,)."""
        return (self.predict_proba(X)[:, 1] >= self.threshold).astype(int)
