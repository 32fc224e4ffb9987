"""scikit-learn transformers that turn signature images into normalised float arrays."""

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
from joblib import effective_n_jobs
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from . import functional as F
from ._io import ImageReadError, read_grayscale

__all__ = ["PreprocessImage", "TestPreprocessImage", "as_image_items"]


def _is_item(obj):
    if isinstance(obj, (str, os.PathLike, Image.Image)):
        return True
    return isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype != object


def as_image_items(X):
    """Flatten image input to a list of items and the leading shape, ``(n,)`` or ``(n, k)``.

    Parameters
    ----------
    X : array-like
        Paths, PIL images or 2-D arrays, as a sequence of shape (n,) or rows of shape (n, k); a
        numeric array of shape (n, H, W) or (n, k, H, W); or a pandas Series/DataFrame of items.

    Returns
    -------
    items : list of length n or n * k
    shape : tuple, ``(n,)`` or ``(n, k)``
    """
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype != object and X.dtype.kind not in "US":
        if X.ndim == 3:
            return list(X), X.shape[:1]
        if X.ndim == 4:
            return list(X.reshape(-1, *X.shape[2:])), X.shape[:2]
        raise ValueError(
            f"a numeric array of shape {X.shape} is not image input: pass images of shape (n, H, W) or "
            "(n, k, H, W), or a sequence of paths, PIL images or 2-D arrays of shape (n,) or (n, k); "
            "wrap a single image in a list"
        )
    if _is_item(X):
        raise ValueError("expected a sequence of images, got a single image: wrap it in a list")
    rows = list(X)
    if not rows:
        raise ValueError("image input is empty: need at least one image")
    if all(_is_item(r) for r in rows):
        return rows, (len(rows),)
    widths = {len(r) if not _is_item(r) and hasattr(r, "__len__") else None for r in rows}
    if len(widths) != 1 or None in widths:
        raise ValueError("image input must be a sequence of images (n,) or of equal-length rows (n, k)")
    items = [item for row in rows for item in row]
    bad = next((i for i in items if not _is_item(i)), None)
    if bad is not None:
        raise ValueError(f"not an image item: {type(bad).__name__} (expected a path, PIL image or 2-D array)")
    return items, (len(rows), widths.pop())


def _distinct_items(items):
    """Each distinct item once: (position of each one's first occurrence, every item's distinct number (n,)).

    The same path (as written) or the same image object is one item, so that a path repeated across
    rows, such as a reference in every row of (questioned, references), is read and preprocessed once.
    Equal images held in different objects count as different.
    """
    keys = [os.fspath(item) if isinstance(item, (str, os.PathLike)) else id(item) for item in items]
    numbers, first = {}, []
    for i, key in enumerate(keys):
        if key not in numbers:
            numbers[key] = len(first)
            first.append(i)
    return first, np.array([numbers[key] for key in keys], dtype=np.intp)


class PreprocessImage(TransformerMixin, BaseEstimator):
    """Normalise signature images: grayscale, denoise, clean, threshold, crop, pad, resize.

    Each image goes through the steps of :mod:`sigest.preprocessing.functional` in order:
    conversion to 8-bit grayscale, median denoising, a threshold (Otsu's by default) giving an ink
    mask, removal of small specks from the mask, background removal (paper set to white, ink keeps
    its gray levels), crop to the ink's bounding box, padding to the output aspect ratio, resize,
    and inversion so that ink is bright on a dark background. ``fit`` learns nothing.

    Parameters
    ----------
    size : tuple of int (height, width), default=(150, 220)
        Output size in pixels.
    denoise : int, default=3
        Median-filter window in pixels; 0 or 1 switches denoising off.
    threshold : "otsu" or int, default="otsu"
        Gray level (0-255) at or below which a pixel is ink, or Otsu's method per image.
    min_speck_size : int, default=4
        Ink components smaller than this many pixels are dropped; 0 switches cleaning off.
    remove_background : bool, default=True
        Set non-ink pixels to paper white.
    binarize : bool, default=False
        Black ink on white paper: the network sees the strokes' shape but not the ink's gray
        levels, which pens, pressure and scanners change. On SigComp2011 Dutch the spread of the
        ink's gray levels alone, without any reference, tells the skilled forgeries from the
        genuine signatures at 8 % EER (on CEDAR the spread of the ink's darkness over its mean,
        at 9.6 %), a trace of how the data set was collected that a model seeing gray levels
        can learn (``benchmarks/cues.py``). Trained and tested binarized,
        sigest's recipe (3 writer folds) lost accuracy where gray levels exist: single-pair
        distance EER 15.4 / 24.8 / 28.0 % against 15.4 / 18.9 / 20.5 % (Bengali / CEDAR / Dutch),
        and a probe on the embedding alone, without references, told Dutch forgeries at 44.9 %
        EER against 31.2 %: the gray-level network leans on the ink's gray levels, perhaps on
        that trace.
    normalize_ink : float in (0, 100] or None, default=None
        After resizing, scale the ink's darkness so that this percentile of it is black
        (:func:`~sigest.preprocessing.functional.normalize_ink`): the network sees the strokes'
        relative gray levels, not how dark the pen or the scanner made them. With None, a
        questioned signature whose ink is lighter than its references' is judged by its ink:
        the default recipe's voter rejected 64-78 % of genuine signatures whose ink was made
        30 % lighter, against 2-4 % as scanned (``benchmarks/ink_shift.py``, 11 networks).
        Trained with 95 (4 writer folds), it rejected 6-7 % in both cases, but its EER as
        scanned was 2.9 / 6.8 / 7.1 % against 2.8 / 5.2 / 5.5 % (Bengali / CEDAR / Dutch): these
        data sets reward a network that knows how dark a writer's ink is.
    crop : bool, default=True
        Crop to the bounding box of the ink.
    canvas : tuple of int (height, width) or None, default=None
        None: the ink's bounding box is scaled to fill ``size``, so every signature comes out
        as large as it can. A tuple: the cropped signature is centred on a paper canvas of that
        many source pixels (shrunk to fit only if it is larger), then the canvas is resized, so
        signatures of one scanner keep their sizes relative to one another
        (SigNet's normalisation). Choose it to hold nearly every signature at the scans' resolution.
        On sigest's recipe (resnet_tiny, 150x220, 3 writer folds, canvas the 99th percentile of
        each data set's ink boxes) it measured worse than fitting: 5-reference ratio EER 11.2 /
        15.1 / 14.7 % against 9.4 / 12.0 / 11.6 % (Bengali / CEDAR / Dutch); compare ink
        measures instead (:meth:`transform_with_ink`).
    keep_aspect : bool, default=True
        Pad to the output aspect ratio before resizing, so the signature is not stretched.
    invert : bool, default=True
        Ink bright (1.0) on a dark (0.0) background, as networks expect.
    measure_ink : bool, default=False
        ``transform`` returns ``{"images": images, "ink": ink}`` (:meth:`transform_with_ink`), so
        that the verifiers after it in a pipeline can compare the ink on the page
        (``compare_ink=True``), which the fitted images hide.
    pool_rows : bool, default=False
        Rows ``(n, k)`` of images (pairs, or a questioned signature and its references) come back
        as each distinct image once and the rows as positions in it: ``{"images": (p, 1, H, W),
        "rows": (n, k)}``, with ``"ink": (p, 2)`` under ``measure_ink``. :class:`~sigest.VotingVerifier`
        and :class:`~sigest.LogisticSiameseRegression` take that form and embed each image once; a
        writer's references are not copied into every row. Input of shape ``(n,)`` is unaffected.
    n_jobs : int or None, default=None
        Threads preprocessing images side by side (decoding and the array work release the GIL);
        None means 1, -1 all cores, as in joblib.

    Attributes
    ----------
    n_features_in_ : int
        Always 1: one image (or one row of images) per sample.

    Examples
    --------
    >>> import numpy as np
    >>> from sigest.preprocessing import PreprocessImage
    >>> page = np.full((60, 120), 250, dtype=np.uint8)
    >>> page[20:40, 10:100] = 30
    >>> PreprocessImage(size=(32, 64)).fit_transform([page, page]).shape
    (2, 1, 32, 64)
    >>> PreprocessImage(size=(32, 64)).fit_transform([[page, page]]).shape
    (1, 2, 1, 32, 64)
    >>> pooled = PreprocessImage(size=(32, 64), pool_rows=True).fit_transform([[page, page], [page, page]])
    >>> pooled["images"].shape, pooled["rows"].tolist()
    ((1, 1, 32, 64), [[0, 0], [0, 0]])
    """

    _parameter_constraints = {
        "size": [tuple, list],
        "denoise": [Interval(Integral, 0, None, closed="left")],
        "threshold": [StrOptions({"otsu"}), Interval(Integral, 0, 255, closed="both")],
        "min_speck_size": [Interval(Integral, 0, None, closed="left")],
        "remove_background": ["boolean"],
        "binarize": ["boolean"],
        "normalize_ink": [Interval(Real, 0, 100, closed="right"), None],
        "crop": ["boolean"],
        "canvas": [tuple, list, None],
        "keep_aspect": ["boolean"],
        "invert": ["boolean"],
        "measure_ink": ["boolean"],
        "pool_rows": ["boolean"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        size=(150, 220),
        *,
        denoise=3,
        threshold="otsu",
        min_speck_size=4,
        remove_background=True,
        binarize=False,
        normalize_ink=None,
        crop=True,
        canvas=None,
        keep_aspect=True,
        invert=True,
        measure_ink=False,
        pool_rows=False,
        n_jobs=None,
    ):
        self.size = size
        self.denoise = denoise
        self.threshold = threshold
        self.min_speck_size = min_speck_size
        self.remove_background = remove_background
        self.binarize = binarize
        self.normalize_ink = normalize_ink
        self.crop = crop
        self.canvas = canvas
        self.keep_aspect = keep_aspect
        self.invert = invert
        self.measure_ink = measure_ink
        self.pool_rows = pool_rows
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags

    def fit(self, X, y=None):
        """Check the parameters and the input; nothing is learned.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, k)
            Images (see :func:`as_image_items`).
        y : ignored

        Returns
        -------
        self : PreprocessImage
        """
        self._validate_params()
        self._check_size()
        as_image_items(X)
        self.n_features_in_ = 1
        return self

    def _check_size(self):
        if len(self.size) != 2 or any(int(s) != s or s < 8 for s in self.size):
            raise ValueError(f"size must be (height, width) of at least 8 pixels each, got {self.size!r}")
        if self.canvas is not None and (len(self.canvas) != 2 or any(int(s) != s or s < 1 for s in self.canvas)):
            raise ValueError(f"canvas must be None or (height, width) in pixels, got {self.canvas!r}")

    def transform(self, X):
        """Preprocess every image.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, k)
            Paths, PIL images or 2-D arrays, one per sample or ``k`` per sample (pairs: k=2,
            triplets: k=3); or numeric arrays of shape (n, H, W) or (n, k, H, W).

        Returns
        -------
        images : ndarray of shape (n, 1, height, width) or (n, k, 1, height, width), float32
            Values in [0, 1]; with ``invert`` ink is bright on a dark background. With
            ``measure_ink``, a dict of these ``images`` and their ``ink`` measures; with
            ``pool_rows`` and rows (n, k), a dict of each distinct image once and the ``rows``.
        """
        images, ink, index, shape = self._distinct_preprocessed(X)
        if self.pool_rows and len(shape) == 2:
            return {"images": images, **({"ink": ink} if self.measure_ink else {}), "rows": index.reshape(shape)}
        images, ink = images[index].reshape(*shape, *images.shape[1:]), ink[index].reshape(*shape, 2)
        return {"images": images, "ink": ink} if self.measure_ink else images

    def transform_with_ink(self, X):
        """Preprocess every image and measure its ink on the page, in one pass.

        Cropping and resizing make every signature as large as the output, so the preprocessed
        images no longer tell how much ink a signature holds on the page nor how wide its strokes
        are; a forger's pen, pressure and size often differ from the writer's.
        :class:`~sigest.VotingVerifier` (``compare_ink=True``) compares them with the references'.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, k)
            As in :meth:`transform`.

        Returns
        -------
        images : ndarray of shape (n, 1, height, width) or (n, k, 1, height, width), float32
            As :meth:`transform` returns.
        ink : ndarray of shape (n, 2) or (n, k, 2), float64
            Per image, at its own resolution after denoising, thresholding and speck removal: the
            number of ink pixels and the mean stroke width in pixels
            (:func:`~sigest.preprocessing.functional.ink_measures`).
        """
        images, ink, index, shape = self._distinct_preprocessed(X)
        return images[index].reshape(*shape, *images.shape[1:]), ink[index].reshape(*shape, 2)

    def _distinct_preprocessed(self, X):
        """Each distinct image of ``X`` preprocessed once: images (p, 1, H, W), ink (p, 2), the position of
        every item of ``X`` among them (flat, int) and the leading shape of ``X``, (n,) or (n, k)."""
        self._validate_params()
        self._check_size()
        items, shape = as_image_items(X)
        first, index = _distinct_items(items)  # rows (questioned, references) repeat the references
        workers = effective_n_jobs(self.n_jobs)
        if workers == 1 or len(first) < 16:
            out = [self._preprocess_at(i, items[i], shape) for i in first]
        else:  # a plain thread pool: joblib's dispatch cost ~0.1 ms an image, 5 % of preprocessing one
            with ThreadPoolExecutor(workers) as pool:
                try:
                    out = list(pool.map(lambda i: self._preprocess_at(i, items[i], shape), first))
                except BaseException:  # an unreadable image (or Ctrl-C): the images still queued are dropped
                    pool.shutdown(cancel_futures=True)
                    raise
        images = np.stack([image for image, _ in out]).reshape(len(out), 1, *self.size)
        return images, np.array([ink for _, ink in out], dtype=np.float64).reshape(len(out), 2), index, shape

    def _preprocess_at(self, index, item, shape):
        """:meth:`preprocess_measured`, its error naming the row (and column) of ``X`` that failed."""
        try:
            return self.preprocess_measured(item)
        except (ImageReadError, FileNotFoundError) as exc:
            where = f"row {index}" if len(shape) == 1 else f"row {index // shape[1]}, column {index % shape[1]}"
            raise type(exc)(f"{where}: {exc}") from None

    def _normalise_pose(self, gray, threshold):
        """Geometric normalisation before cropping; identity here, deskew in the test variant."""
        return gray

    def preprocess_one(self, item):
        """Preprocess one image: float32 array of shape (height, width)."""
        return self.preprocess_measured(item)[0]

    def preprocess_measured(self, item):
        """Preprocess one image and measure its ink: (float32 array (height, width), (ink pixels, stroke width))."""
        gray, mask = self.ink_on_page(item)
        ink = F.ink_measures(mask)
        if self.binarize:
            gray = F.binarize(mask)
        elif self.remove_background:
            gray = F.remove_background(gray, mask)
        if self.canvas is not None:
            gray = F.center_on_canvas(gray, self.canvas)
        if self.keep_aspect:
            gray = F.pad_to_aspect(gray, self.size[1] / self.size[0])
        gray = F.resize(gray, self.size)
        if self.normalize_ink is not None:
            gray = F.normalize_ink(gray, self.normalize_ink)
        return F.to_float(gray, invert=self.invert), ink

    def ink_on_page(self, item):
        """One image's ink at the scan's own resolution, before any resizing.

        Returns ``(gray, mask)``: the denoised (and, in the test variant, deskewed) uint8 image
        and its boolean ink mask, both of shape (h, w) in source pixels, cropped to the ink's
        bounding box when ``crop`` is set.
        """
        gray = read_grayscale(item)
        gray = F.median_denoise(gray, self.denoise)
        histogram = F.gray_histogram(gray)
        threshold = F.otsu_threshold(gray, histogram) if self.threshold == "otsu" else self.threshold
        posed = self._normalise_pose(gray, threshold)
        if posed is not gray:
            gray, histogram = posed, F.gray_histogram(posed)
        mask = F.remove_specks(F.ink_mask(gray, threshold), self.min_speck_size)
        box = F.ink_box(mask)  # every ink pixel lies inside: the ink test reads the box alone
        if box is None or not F.has_ink(gray[box], mask[box], histogram=histogram):
            name = item if isinstance(item, (str, os.PathLike)) else "image"
            raise ImageReadError(f"{name}: no ink found (blank or uniform image)")
        if self.crop:
            gray, mask = gray[box], mask[box]
        return gray, mask

    def get_feature_names_out(self, input_features=None):
        """One output 'feature' per sample: the preprocessed image."""
        return np.array(["image"], dtype=object)


class TestPreprocessImage(PreprocessImage):
    """:class:`PreprocessImage` made robust to small rotations: deskews the ink before cropping.

    The ink's principal axis (from its second moments) is rotated to the horizontal, within
    ``max_angle`` degrees, so that a signature written or scanned a few degrees off comes out
    close to its upright version. Use it for questioned signatures at test time, or for training
    and test alike to make a model rotation-invariant.

    Parameters
    ----------
    size, denoise, threshold, min_speck_size, remove_background, binarize, normalize_ink, crop, canvas, keep_aspect, invert
        As in :class:`PreprocessImage`.
    measure_ink, n_jobs
        As in :class:`PreprocessImage`.
    max_angle : float, default=30.0
        Largest correction in degrees; an ink axis tilted further is left as it is.

    Examples
    --------
    >>> import numpy as np
    >>> from sigest.preprocessing import TestPreprocessImage
    >>> page = np.full((60, 120), 250, dtype=np.uint8)
    >>> page[25:35, 10:110] = 30
    >>> TestPreprocessImage(size=(32, 64)).fit_transform([page]).shape
    (1, 1, 32, 64)
    """

    __test__ = False  # a transformer, not a pytest test class

    _parameter_constraints = {
        **PreprocessImage._parameter_constraints,
        "max_angle": [Interval(Real, 0, 90, closed="both")],
    }

    def __init__(
        self,
        size=(150, 220),
        *,
        denoise=3,
        threshold="otsu",
        min_speck_size=4,
        remove_background=True,
        binarize=False,
        normalize_ink=None,
        crop=True,
        canvas=None,
        keep_aspect=True,
        invert=True,
        measure_ink=False,
        pool_rows=False,
        n_jobs=None,
        max_angle=30.0,
    ):
        super().__init__(
            size,
            denoise=denoise,
            threshold=threshold,
            min_speck_size=min_speck_size,
            remove_background=remove_background,
            binarize=binarize,
            normalize_ink=normalize_ink,
            crop=crop,
            canvas=canvas,
            keep_aspect=keep_aspect,
            invert=invert,
            measure_ink=measure_ink,
            pool_rows=pool_rows,
            n_jobs=n_jobs,
        )
        self.max_angle = max_angle

    def _normalise_pose(self, gray, threshold):
        mask = F.remove_specks(F.ink_mask(gray, threshold), self.min_speck_size)
        angle = F.principal_angle(mask)
        if abs(angle) > self.max_angle:
            return gray
        return F.rotate(gray, angle)
