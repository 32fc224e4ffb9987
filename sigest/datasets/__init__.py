"""Signature data: reading folders, sampling pairs and triplets, writer splits, synthetic signatures."""

from ._layouts import IMAGE_EXTENSIONS, LAYOUTS, drop_duplicate_files, load_signatures, qualified_writers
from ._sampling import (
    check_writers,
    make_pairs,
    make_reference_sets,
    make_triplets,
    random_images,
    split_writers,
    writer_groups,
)
from ._synthetic import make_signatures, save_signatures

__all__ = [
    "check_writers",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "drop_duplicate_files",
    "load_signatures",
    "make_pairs",
    "make_reference_sets",
    "make_signatures",
    "make_triplets",
    "qualified_writers",
    "random_images",
    "save_signatures",
    "split_writers",
    "writer_groups",
]
