"""Find preprocessed images that repeat another image of their group: copies of one scan cropped, re-saved or
shifted, which a file comparison misses."""

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["find_near_duplicates"]


def _zscore(x):
    """Each row of x (m, p) scaled to zero mean and unit variance."""
    x = x - x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + 1e-6)


def _aligned_correlations(x, max_shift):
    """Correlations of every two images of x (m, h, w), each at the best of the shifts by up to ``max_shift``
    pixels each way: (m, m), entry (i, j) the best correlation of image i's centre with image j's shifted window."""
    m, height, width = x.shape
    s = max_shift
    centres = _zscore(x[:, s : height - s, s : width - s].reshape(m, -1))
    best = np.full((m, m), -1.0, dtype=np.float32)
    for dy in range(-s, s + 1):
        for dx in range(-s, s + 1):
            windows = _zscore(x[:, s + dy : height - s + dy, s + dx : width - s + dx].reshape(m, -1))
            np.maximum(best, centres @ windows.T / centres.shape[1], out=best)
    return best


def find_near_duplicates(images, groups, threshold=0.95, max_shift=0.03):
    """Mark each image that repeats an earlier image of its group, up to a small shift.

    Two images of one writer's genuine signatures that are one scan saved twice (BHSig260 Bengali
    holds copies cropped by two rows, CEDAR copies of a few signatures) make a pair that compares an
    image with itself. After preprocessing (150x220), 24 of the 25 such copies in the three real sets
    correlate at 0.964-1.0 once aligned; the 25th, a copy whose crop scaled it differently (CEDAR
    ``original_47_3`` of ``original_47_12``), at 0.932, under the threshold. Two signatures written
    apart stayed at or under 0.872, and procedurally generated writers
    (:func:`sigest.datasets.make_signatures`), more regular than real ones, under 0.945. The cost
    is about 0.3 s a group of 24-30 images of 150x220 on one CPU thread (80 s for the 6,126 images).

    Parameters
    ----------
    images : ndarray of shape (n, height, width)
        Preprocessed images (any real dtype; ink bright or dark, the same for all).
    groups : array-like of shape (n,)
        Only images of the same group are compared (e.g. writer and genuine/forged).
    threshold : float, default=0.95
        Smallest correlation of the two images, slightly blurred (a Gaussian of sigma 0.75 % of the
        height: 1.1 pixels at 150 rows) and at their best alignment, that makes a copy.
    max_shift : float, default=0.03
        Largest shift tried each way, as a share of the height (4 pixels at 150 rows; at least 1).

    Returns
    -------
    repeated : ndarray of bool, shape (n,)
        True for an image that repeats an earlier image of its group (the first of each set of
        copies is kept, False).
    """
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, height, width), got {images.shape}")
    groups = np.asarray(groups)
    if len(groups) != len(images):
        raise ValueError(f"groups has {len(groups)} entries for {len(images)} images")
    sigma, shift = 0.0075 * images.shape[1], max(1, int(max_shift * images.shape[1]))
    repeated = np.zeros(len(images), dtype=bool)
    names, codes = np.unique(groups, return_inverse=True)
    for members in (np.flatnonzero(codes == c) for c in range(len(names))):
        if len(members) < 2:
            continue
        blurred = gaussian_filter(images[members].astype(np.float32), sigma=(0, sigma, sigma))
        aligned = _aligned_correlations(blurred, shift)
        copy = np.maximum(aligned, aligned.T) >= threshold
        for j in range(1, len(members)):
            repeated[members[j]] = bool(np.any(copy[j, :j] & ~repeated[members[:j]]))
    return repeated
