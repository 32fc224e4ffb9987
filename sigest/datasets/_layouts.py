"""Reading a folder of signature images into one table, whatever its layout.

Four layouts are recognised from folder structure and file names:

``cedar``
    ``full_org/original_<w>_<i>.png`` and ``full_forg/forgeries_<w>_<i>.png``.
``bhsig260``
    per-writer folders of ``B-S-<w>-G-<i>.tif`` (genuine) and ``B-S-<w>-F-<i>.tif`` (forged).
``sigcomp``
    the SigComp2011 / Kaggle layout: ``<w>/`` holds the genuine signatures of writer ``w`` and
    ``<w>_forg/`` the skilled forgeries of ``w``.
``generic``
    one folder per writer with ``genuine/`` and ``forged/`` inside.
"""

import re
from pathlib import Path

import pandas as pd

__all__ = ["IMAGE_EXTENSIONS", "LAYOUTS", "load_signatures"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
LAYOUTS = ("cedar", "bhsig260", "sigcomp", "generic")

_CEDAR = re.compile(r"^(original|forgeries)_(\d+)_(\d+)$", re.IGNORECASE)
_BHSIG = re.compile(r"^[A-Za-z]+-S-(\d+)-([GF])-(\d+)$")
_GENUINE_DIRS = {"genuine", "real", "original", "org"}
_FORGED_DIRS = {"forged", "forgery", "forgeries", "fake", "forg"}


def _image_files(root):
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _parse_cedar(root, files):
    rows = []
    for path in files:
        match = _CEDAR.match(path.stem)
        if match:
            kind, writer, _ = match.groups()
            rows.append((path, str(int(writer)), kind.lower() == "original"))
    return rows


def _parse_bhsig(root, files):
    rows = []
    for path in files:
        match = _BHSIG.match(path.stem)
        if match:
            writer, kind, _ = match.groups()
            rows.append((path, str(int(writer)), kind == "G"))
    return rows


def _parse_sigcomp(root, files):
    rows = []
    for path in files:
        folder = path.parent.name
        if folder.lower().endswith("_forg"):
            rows.append((path, folder[: -len("_forg")], False))
        elif (path.parent.parent / f"{folder}_forg").is_dir() or path.parent.parent == root:
            rows.append((path, folder, True))
    return rows


def _parse_generic(root, files):
    rows = []
    for path in files:
        kind = path.parent.name.lower()
        if kind in _GENUINE_DIRS | _FORGED_DIRS and path.parent.parent != root:
            rows.append((path, path.parent.parent.name, kind in _GENUINE_DIRS))
    return rows


def _detect_layout(root, files):
    """Return ``(layout, rows)`` for the layout that explains the most files."""
    dirs = {p.parent for p in files}
    candidates = {
        "cedar": _parse_cedar,
        "bhsig260": _parse_bhsig,
        "generic": _parse_generic,
    }
    if any(d.name.lower().endswith("_forg") for d in dirs):
        candidates["sigcomp"] = _parse_sigcomp
    best = max(((name, parse(root, files)) for name, parse in candidates.items()), key=lambda c: len(c[1]))
    return best


def load_signatures(root):
    """Collect the signature images under ``root`` into a table.

    The layout (CEDAR, BHSig260, SigComp/Kaggle or generic) is detected from folder structure and
    file names; see the module docstring for each layout.

    Parameters
    ----------
    root : str or path-like
        Folder holding the data set.

    Returns
    -------
    table : pandas.DataFrame of shape (n_images, 3)
        Columns ``path`` (str, absolute), ``writer`` (str, the signer the image claims to be) and
        ``genuine`` (bool, False for a skilled forgery of ``writer``), sorted by writer, then
        genuine first, then path. ``table.attrs["layout"]`` names the detected layout.

    Raises
    ------
    FileNotFoundError
        If ``root`` is not a folder.
    ValueError
        If it holds no image, if its layout is not recognised, or if a writer has forgeries but no
        genuine signature.

    Examples
    --------
    >>> import tempfile
    >>> from sigest.datasets import make_signatures, save_signatures, load_signatures
    >>> root = save_signatures(make_signatures(n_writers=2, n_genuine=2, n_forged=1,
    ...                                        random_state=0), tempfile.mkdtemp())
    >>> table = load_signatures(root)
    >>> table.attrs["layout"], len(table), int(table.genuine.sum())
    ('generic', 6, 4)
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"signature folder not found: {root}")
    files = _image_files(root)
    if not files:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}")
    layout, rows = _detect_layout(root, files)
    if not rows:
        folders = sorted({str(p.parent.relative_to(root)) for p in files})
        raise ValueError(
            f"unrecognised signature layout in {root}: found {len(files)} image files in "
            f"{len(folders)} folders (e.g. {', '.join(folders[:3])}; files such as {files[0].name}). "
            "Expected CEDAR (original_<w>_<i>/forgeries_<w>_<i>), BHSig260 (X-S-<w>-G-<i>/X-S-<w>-F-<i>), "
            "SigComp/Kaggle (<w>/ and <w>_forg/) or generic (<writer>/genuine/ and <writer>/forged/)."
        )
    table = pd.DataFrame(
        {
            "path": [str(p.resolve()) for p, _, _ in rows],
            "writer": pd.Series([w for _, w, _ in rows], dtype=object),
            "genuine": [g for _, _, g in rows],
        }
    )
    has_genuine = table.groupby("writer")["genuine"].any()
    orphans = sorted(has_genuine.index[~has_genuine.to_numpy()])
    if orphans:
        raise ValueError(
            f"writers with forgeries but no genuine signature in {root} ({layout} layout): "
            f"{', '.join(orphans[:10])}{' ...' if len(orphans) > 10 else ''}"
        )
    table = table.sort_values(["writer", "genuine", "path"], ascending=[True, False, True], ignore_index=True)
    table.attrs["layout"] = layout
    return table
