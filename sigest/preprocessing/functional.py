"""The preprocessing steps, each a small pure function on a 2-D numpy array.

Gray images are uint8 arrays of shape (height, width) with dark ink on light paper, as scanned;
masks are bool arrays of the same shape, True on ink. Nothing here reads files or keeps state.
"""

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "median_denoise",
    "otsu_threshold",
    "ink_mask",
    "remove_specks",
    "has_ink",
    "remove_background",
    "crop_to_mask",
    "pad_to_aspect",
    "resize",
    "principal_angle",
    "rotate",
    "to_float",
]


# Devillard's optimal 19-exchange sorting network for the median of 9 values.
_MEDIAN9_NETWORK = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)


def median_denoise(image, size=3):
    """Median filter of odd window ``size`` (pixels) against salt-and-pepper scanner noise.

    Edges repeat the border pixel. The 3x3 window, the default, runs as a sorting network on
    shifted views (several times faster than a generic rank filter).
    """
    if size <= 1:
        return image
    if size != 3:
        return ndimage.median_filter(image, size=int(size) | 1, mode="nearest")
    padded = np.pad(image, 1, mode="edge")
    height, width = image.shape
    v = [padded[i : i + height, j : j + width] for i in range(3) for j in range(3)]
    for a, b in _MEDIAN9_NETWORK:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])
    return v[4]


def otsu_threshold(image):
    """Otsu's threshold of a uint8 image: the gray level (0-255) that best splits ink from paper."""
    hist = np.bincount(image.ravel(), minlength=256).astype(np.float64)
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
    """Drop connected ink components smaller than ``min_size`` pixels (dust, scanner specks)."""
    if min_size <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def has_ink(image, mask, min_contrast=20):
    """True if ``mask`` marks ink that is at least ``min_contrast`` gray levels darker than paper."""
    if not mask.any() or mask.all():
        return False
    return float(np.median(image[~mask])) - float(image[mask].mean()) >= min_contrast


def remove_background(image, mask):
    """Set every non-ink pixel to white paper (255), keeping the ink's gray levels."""
    return np.where(mask, image, np.uint8(255))


def crop_to_mask(image, mask, margin=0):
    """Crop ``image`` to the bounding box of ``mask`` plus ``margin`` pixels on each side."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return image
    top, bottom = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, image.shape[0])
    left, right = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, image.shape[1])
    return image[top:bottom, left:right]


def pad_to_aspect(image, aspect, fill=255):
    """Pad ``image`` evenly with ``fill`` to the ratio ``aspect`` = width / height, keeping its shape."""
    height, width = image.shape
    if width / height < aspect:
        new_h, new_w = height, int(round(height * aspect))
    else:
        new_h, new_w = int(round(width / aspect)), width
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.pad(image, ((top, new_h - height - top), (left, new_w - width - left)), constant_values=fill)


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
