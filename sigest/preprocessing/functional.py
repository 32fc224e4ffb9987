"""The preprocessing steps, each a small pure function on a 2-D numpy array.

Gray images are uint8 arrays of shape (height, width) with dark ink on light paper, as scanned;
masks are bool arrays of the same shape, True on ink. Nothing here reads files or keeps state.
"""

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "median_denoise",
    "gray_histogram",
    "otsu_threshold",
    "ink_mask",
    "remove_specks",
    "has_ink",
    "remove_background",
    "binarize",
    "normalize_ink",
    "ink_box",
    "crop_to_mask",
    "pad_to_aspect",
    "resize",
    "principal_angle",
    "rotate",
    "to_float",
]


def _sort3(a, b, c):
    """Element-wise sort of three arrays: (low, middle, high)."""
    low, high = np.minimum(a, b), np.maximum(a, b)
    middle, high = np.minimum(high, c), np.maximum(high, c)
    return np.minimum(low, middle), np.maximum(low, middle), high


def _median3(a, b, c):
    """Element-wise median of three arrays."""
    return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))


def median_denoise(image, size=3):
    """Median filter of odd window ``size`` (pixels) against salt-and-pepper scanner noise.

    Edges repeat the border pixel. The 3x3 window, the default, sorts each column's three pixels
    once, then takes the median of (largest low, median middle, smallest high) over the three
    columns of a window: exactly the 9-pixel median, several times faster than a rank filter.
    """
    if size <= 1:
        return image
    if size != 3:
        return ndimage.median_filter(image, size=int(size) | 1, mode="nearest")
    padded = np.pad(image, 1, mode="edge")
    low, middle, high = _sort3(padded[:-2], padded[1:-1], padded[2:])
    left, centre, right = np.s_[:, :-2], np.s_[:, 1:-1], np.s_[:, 2:]
    largest_low = np.maximum(np.maximum(low[left], low[centre]), low[right])
    smallest_high = np.minimum(np.minimum(high[left], high[centre]), high[right])
    return _median3(largest_low, _median3(middle[left], middle[centre], middle[right]), smallest_high)


def gray_histogram(image):
    """Pixel count of each gray level of a uint8 image: int64 array of shape (256,)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).histogram(), dtype=np.int64)


def otsu_threshold(image, histogram=None):
    """Otsu's threshold of a uint8 image: the gray level (0-255) that best splits ink from paper.

    ``histogram``, if given, is ``gray_histogram(image)`` computed already.
    """
    hist = (gray_histogram(image) if histogram is None else histogram).astype(np.float64)
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * np.arange(256))
    background = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean * total) ** 2 / (weight * background)
    between[~np.isfinite(between)] = 0
    return int(np.argmax(between))


def ink_mask(image, threshold):
    """Ink pixels: those at or below ``threshold`` (int gray level)."""
    return image <= threshold


def remove_specks(mask, min_size):
    """Drop connected ink components smaller than ``min_size`` pixels (dust, scanner specks).

    Components are 8-connected; they are labelled inside the ink's bounding box only.
    """
    if min_size <= 1:
        return mask
    box = ink_box(mask)
    if box is None:
        return mask
    labels, n = ndimage.label(mask[box], structure=np.ones((3, 3), dtype=bool))
    ink_labels = labels[mask[box]]
    small = np.bincount(ink_labels, minlength=n + 1) < min_size
    if not small[1:].any():
        return mask
    out = mask.copy()
    out[box][mask[box]] = ~small[ink_labels]
    return out


def ink_measures(mask):
    """How much ink a signature holds and how wide its strokes are, in pixels of ``mask``.

    Returns ``(ink pixels, mean stroke width)``: the stroke width is twice the ink area over its
    boundary (ink pixels with a 4-neighbour outside the ink), the width of a stroke of any length.
    Both are at least 1.
    """
    ink = int(np.count_nonzero(mask))
    padded = np.pad(mask, 1)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = int(np.count_nonzero(mask & ~inside))
    return max(ink, 1), max(2.0 * ink / max(boundary, 1), 1.0)


def _histogram_median(hist):
    """Median of the values a histogram counts, as :func:`numpy.median` gives it (float)."""
    cumulative = np.cumsum(hist)
    n = cumulative[-1]
    low, high = np.searchsorted(cumulative, [(n - 1) // 2, n // 2], side="right")
    return (low + high) / 2


def has_ink(image, mask, min_contrast=20, histogram=None):
    """True if ``mask`` marks ink that is at least ``min_contrast`` gray levels darker than paper.

    Paper is the median gray level off the mask, ink the mean on it. ``histogram``, if given, is
    ``gray_histogram`` of the whole page that ``image`` and ``mask`` may be a crop of (the ink's
    bounding box, say: the pixels outside it are paper), so that only the crop need be read.
    """
    if not mask.any():
        return False
    ink = image[mask]
    paper = (gray_histogram(image) if histogram is None else histogram) - np.bincount(ink, minlength=256)
    if not paper.any():  # all ink, no paper
        return False
    return float(_histogram_median(paper)) - float(ink.mean()) >= min_contrast


def remove_background(image, mask):
    """Set every non-ink pixel to white paper (255), keeping the ink's gray levels."""
    return np.where(mask, image, np.uint8(255))


def binarize(mask):
    """Black ink (0) on white paper (255): the strokes' shape without the ink's gray levels, uint8 (h, w)."""
    return np.where(mask, np.uint8(0), np.uint8(255))


def normalize_ink(image, percentile=95.0, floor=12):
    """Scale the ink's darkness so that its ``percentile``-th percentile becomes black, paper staying white.

    Darkness is ``255 - gray level``; the ink is every pixel darker than ``floor``. Multiplying every
    darkness by one factor (a lighter or darker pen, another scanner's contrast) gives the same result,
    while the strokes' relative gray levels are kept. An image with no pixel darker than ``floor``
    comes back unchanged.

    Parameters
    ----------
    image : ndarray of shape (h, w), uint8
        Dark ink on white paper (background removed, so that paper is not counted as ink).
    percentile : float in (0, 100], default=95.0
    floor : int, default=12

    Returns
    -------
    image : ndarray of shape (h, w), uint8
    """
    darkness = 255.0 - image
    ink = darkness[darkness > floor]
    if ink.size == 0:
        return image
    top = np.percentile(ink, percentile)
    return (255.0 - np.clip(np.rint(darkness * (255.0 / top)), 0.0, 255.0)).astype(np.uint8)


def ink_box(mask, margin=0):
    """The bounding box of ``mask``'s True pixels plus ``margin`` pixels on each side, within the image.

    Returns ``(rows, cols)`` slices, or None when the mask is empty.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, mask.shape[0])),
            slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, mask.shape[1])))


def crop_to_mask(image, mask, margin=0):
    """Crop ``image`` to the bounding box of ``mask`` plus ``margin`` pixels on each side (:func:`ink_box`)."""
    box = ink_box(mask, margin)
    return image if box is None else image[box]


def pad_to_aspect(image, aspect, fill=255):
    """Pad ``image`` evenly with ``fill`` to the ratio ``aspect`` = width / height, keeping its shape."""
    height, width = image.shape
    if width / height < aspect:
        new_h, new_w = height, int(round(height * aspect))
    else:
        new_h, new_w = int(round(width / aspect)), width
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.pad(image, ((top, new_h - height - top), (left, new_w - width - left)), constant_values=fill)


def center_on_canvas(image, canvas, fill=255):
    """Centre ``image`` on a ``fill`` canvas of ``canvas`` = (height, width) pixels.

    An image larger than the canvas is first shrunk, keeping its aspect, until it fits. Every
    image that fits keeps its size in pixels, so signatures centred on one canvas keep their sizes
    relative to one another (SigNet's normalisation), which cropping to the ink and resizing loses.
    """
    height, width = image.shape
    fit = min(canvas[0] / height, canvas[1] / width)
    if fit < 1:
        height, width = max(1, int(height * fit)), max(1, int(width * fit))
        image = resize(image, (height, width))
    top, left = (canvas[0] - height) // 2, (canvas[1] - width) // 2
    return np.pad(image, ((top, canvas[0] - height - top), (left, canvas[1] - width - left)), constant_values=fill)


def resize(image, size):
    """Resize to ``size`` = (height, width) with anti-aliased bilinear filtering."""
    height, width = size
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def principal_angle(mask):
    """Angle in degrees of the ink's principal axis against the horizontal, from second moments.

    Positive when the ink slopes down to the right on the page (rows grow with columns).
    """
    rows, cols = np.nonzero(mask)
    if rows.size < 2:
        return 0.0
    rows = rows - rows.mean()
    cols = cols - cols.mean()
    mu20, mu02, mu11 = (cols * cols).mean(), (rows * rows).mean(), (cols * rows).mean()
    return float(np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02)))


def rotate(image, angle, fill=255):
    """Rotate counter-clockwise by ``angle`` degrees, growing the canvas and filling with ``fill``."""
    if angle == 0:
        return image
    rotated = Image.fromarray(image).rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=fill)
    return np.asarray(rotated)


def to_float(image, invert=True):
    """float32 array in [0, 1]; with ``invert`` ink is bright (1) on a dark (0) background."""
    out = image.astype(np.float32) / 255.0
    return 1.0 - out if invert else out
