"""Image preprocessing: pure functions (:mod:`.functional`) and scikit-learn transformers."""

from . import functional
from ._io import ImageReadError, read_grayscale
from ._near_duplicates import find_near_duplicates
from ._transformers import PreprocessImage, TestPreprocessImage, as_image_items

__all__ = ["ImageReadError", "PreprocessImage", "TestPreprocessImage", "as_image_items", "find_near_duplicates",
           "functional", "read_grayscale"]
