"""Reading one signature image, from a file, a PIL image or an array, into an 8-bit grayscale array."""

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageReadError", "read_grayscale", "MAX_SIDE"]

MAX_SIDE = 4000
"""Longest side, in pixels, kept on reading: a larger image is reduced by an integer factor as it is
decoded (JPEG draft mode) or right after, so a huge scan costs megabytes, not gigabytes. A signature
needs far fewer pixels: the network sees 150x220."""


class ImageReadError(ValueError):
    """An input image cannot be used; the message names the image and the problem."""


def _describe(source):
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"PIL image ({source.mode}, {source.size[0]}x{source.size[1]})"
    return f"array of shape {np.shape(source)}"


_GRAY_RAMP = [level for level in range(256) for _ in "RGB"]


def _flatten_to_gray(image, owned=False):
    """Grayscale uint8 array of a PIL image; transparency is paper (white), not ink.

    ``owned``: the image was opened here, so EXIF orientation may be applied in place.
    """
    if owned:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _to_uint8(np.asarray(image))
    if image.mode == "P" and image.getpalette("RGB") == _GRAY_RAMP:
        return np.asarray(image, dtype=np.uint8)  # palette index i is gray level i
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def _to_uint8(array):
    """Rescale an integer or float gray array to uint8 (16-bit >> 8, float in [0, 1] x 255)."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return np.where(array, 255, 0).astype(np.uint8)
    is_float = np.issubdtype(array.dtype, np.floating)
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("it holds NaN or infinite values")
    top = array.max() if array.size else 0
    if is_float and top <= 1.0 and array.min() >= 0:
        array = array * 255.0
    elif top > 255:
        array = array / 257.0
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def read_grayscale(source):
    """Read one image as an 8-bit grayscale array, dark ink on light paper as scanned.

    Parameters
    ----------
    source : str, path-like, PIL.Image.Image or array-like of shape (height, width)
        A file path (PNG, JPEG, TIFF, BMP, ...), an open PIL image, or a 2-D array (uint8, 16-bit
        integers, or floats in [0, 1]). EXIF orientation is applied, transparent pixels become
        paper, palette, 16-bit and CMYK images are converted. Files are only read, never written.
        A file whose longest side exceeds :data:`MAX_SIDE` pixels is reduced by an integer factor.

    Returns
    -------
    image : ndarray of shape (height, width), uint8

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ImageReadError
        The file is empty, not an image, truncated, too large (PIL's decompression-bomb guard) or
        the array is not 2-D; the message names the source.
    """
    name = _describe(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if path.is_dir():
                raise ImageReadError(f"{path}: is a folder, not an image file")
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path}")
            if path.stat().st_size == 0:
                raise ImageReadError(f"{path}: the file is empty (0 bytes)")
            with Image.open(io.BytesIO(path.read_bytes())) as image:  # faster than PIL's own file reads
                factor = -(-max(image.size) // MAX_SIDE)
                if factor > 1:
                    image.draft("L", (image.size[0] // factor, image.size[1] // factor))
                image.load()
                factor = -(-max(image.size) // MAX_SIDE)
                return _flatten_to_gray(image.reduce(factor) if factor > 1 else image, owned=True)
        if isinstance(source, Image.Image):
            return _flatten_to_gray(source)
        array = np.asarray(source)
        if array.ndim != 2 or min(array.shape) < 1:
            raise ImageReadError(f"{name}: expected a 2-D grayscale image array")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ImageReadError(f"{name}: expected a numeric array, got dtype {array.dtype}")
        return _to_uint8(array)
    except (FileNotFoundError, ImageReadError):
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not an image file that PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{name}: cannot be read ({exc})") from None
