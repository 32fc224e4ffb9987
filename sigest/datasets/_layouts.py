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

import hashlib
import os
import re
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image

from ..preprocessing._io import ImageReadError, read_grayscale

__all__ = ["IMAGE_EXTENSIONS", "LAYOUTS", "load_signatures", "qualified_writers"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
LAYOUTS = ("cedar", "bhsig260", "sigcomp", "generic")

_CEDAR = re.compile(r"^(original|forgeries)_(\d+)_(\d+)$", re.IGNORECASE)
_BHSIG = re.compile(r"^[A-Za-z]+-S-(\d+)-([GF])-(\d+)$")
_GENUINE_DIRS = {"genuine", "real", "original", "org"}
_FORGED_DIRS = {"forged", "forgery", "forgeries", "fake", "forg"}


def _image_files(root):
    """Image files under ``root``, following symbolic links to folders (each real folder visited once)."""
    files, seen = [], set()

    def unreadable(error):
        raise PermissionError(f"cannot read the folder {error.filename}: {error.strerror}")

    for folder, subfolders, names in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        files += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(p for p in files if p.is_file())


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
    """Return ``(layout, rows)`` for the layout that explains the most files.

    Raises ValueError when files the chosen layout leaves out are explained by another layout: a
    folder mixing layouts would otherwise be mislabelled (a CEDAR forgery read as a genuine
    signature of a writer named after its folder) or lose writers without a word.
    """
    dirs = {p.parent for p in files}
    candidates = {
        "cedar": _parse_cedar,
        "bhsig260": _parse_bhsig,
        "generic": _parse_generic,
    }
    if any(d.name.lower().endswith("_forg") for d in dirs):
        candidates["sigcomp"] = _parse_sigcomp
    parsed = {name: parse(root, files) for name, parse in candidates.items()}
    layout = max(parsed, key=lambda name: len(parsed[name]))
    explained = {path for path, _, _ in parsed[layout]}
    conflicts = {name: [p for p, _, _ in rows if p not in explained] for name, rows in parsed.items() if name != layout}
    conflicts = {name: paths for name, paths in conflicts.items() if paths}
    if conflicts:
        found = "; ".join(f"{len(paths)} file(s) in the {name} layout, e.g. {paths[0].relative_to(root)}"
                          for name, paths in conflicts.items())
        raise ValueError(
            f"{root} mixes signature layouts: {len(explained)} file(s) in the {layout} layout "
            f"(e.g. {next(iter(sorted(explained))).relative_to(root)}), and {found}. "
            "Put each data set in its own folder and read them together with load_signatures([folder_a, folder_b])."
        )
    return layout, parsed[layout]


def _read_one(root):
    """Table of one data-set folder (columns path, writer, genuine) and its layout."""
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
    rows = _qualify_colliding_writers(root, layout, rows)
    table = pd.DataFrame(
        {
            "path": [str(p.absolute()) for p, _, _ in rows],
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
    return table, layout


def _writer_folder(layout, path, writer):
    """The folder that identifies a row's writer in the folder-named layouts (None in the others)."""
    if layout == "generic":
        return path.parent.parent
    if layout == "sigcomp":
        return path.parent.parent / writer
    return None


def _qualify_colliding_writers(root, layout, rows):
    """Writers named alike in different subfolders (``setA/001``, ``setB/001``) are different people:
    name them by their path under ``root``, with a warning, instead of merging them."""
    folders = {}
    for path, writer, _ in rows:
        folder = _writer_folder(layout, path, writer)
        if folder is not None:
            folders.setdefault(writer, set()).add(folder)
    colliding = {writer for writer, found in folders.items() if len(found) > 1}
    if not colliding:
        return rows
    warnings.warn(f"{len(colliding)} writer name(s) appear in several subfolders of {root} "
                  f"(e.g. {sorted(colliding)[0]!r}); they are kept apart, named by their path under the folder",
                  stacklevel=3)
    return [(path, _writer_folder(layout, path, writer).relative_to(root).as_posix() if writer in colliding else writer,
             genuine) for path, writer, genuine in rows]


def _image_sides(path):
    """The two sides of an image file in pixels, shorter first (so that an EXIF rotation does not change them),
    read from its header alone; None if PIL cannot read it."""
    try:
        with Image.open(path) as image:
            return tuple(sorted(image.size))
    except (OSError, ValueError):
        return None


def _image_digest(path):
    """Hash of an image's gray levels as the preprocessing reads them (:func:`read_grayscale`), so that two
    files of one image whose bytes differ (another header, a palette instead of gray levels) hash alike; a file
    that cannot be read is hashed by its bytes."""
    try:
        image = read_grayscale(path)
        content = f"{image.shape}".encode() + image.tobytes()
    except ImageReadError:
        content = Path(path).read_bytes()
    return hashlib.blake2b(content, digest_size=16).hexdigest()


def drop_duplicate_files(table):
    """Keep one file of each group of files of a writer that hold the same image.

    A pair of an image with its own copy is not a comparison: it inflates every genuine-genuine
    score. Files are compared by their gray levels within each writer, so a copy whose bytes differ
    (BHSig260 Bengali holds copies of one image, one with a palette and one in gray levels) is found
    too; only files whose writer has another file of the same size are decoded. The first path (in
    table order) of each group is kept.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with ``path`` and ``writer`` columns.

    Returns
    -------
    table : pandas.DataFrame
        The rows kept, with a fresh index; ``table.attrs["n_duplicates"]`` counts the rows dropped.
    """
    sides = [_image_sides(p) for p in table["path"]]
    shared = pd.DataFrame({"writer": table["writer"], "sides": sides}, index=table.index).duplicated(keep=False)
    digests = pd.Series([_image_digest(p) if both else None for p, both in zip(table["path"], shared)], index=table.index)
    duplicated = shared & pd.DataFrame({"writer": table["writer"], "digest": digests}).duplicated()
    kept = table.loc[~duplicated.to_numpy()].reset_index(drop=True)
    kept.attrs = {**table.attrs, "n_duplicates": int(duplicated.sum())}
    return kept


def load_signatures(root, *, drop_duplicates=True):
    """Collect the signature images under one or several data-set folders into a table.

    The layout (CEDAR, BHSig260, SigComp/Kaggle or generic) is detected per folder from folder
    structure and file names; see the module docstring for each layout. With several folders,
    writers are qualified by their data set (``"cedar/12"``), so that ids never collide.

    Parameters
    ----------
    root : str, path-like or sequence of them
        Folder(s) holding a data set each.
    drop_duplicates : bool, default=True
        Keep one file of each group of files of a writer that hold the same image (the same gray
        levels, :func:`drop_duplicate_files`); a warning says how many were dropped.

    Returns
    -------
    table : pandas.DataFrame of shape (n_images, 4)
        Columns ``path`` (str, absolute), ``writer`` (str, the signer the image claims to be),
        ``genuine`` (bool, False for a skilled forgery of ``writer``) and ``dataset`` (str, the
        folder's name), sorted by writer, then genuine first, then path.
        ``table.attrs["layout"]`` names the detected layout (``{dataset: layout}`` for several
        folders) and ``table.attrs["n_duplicates"]`` the duplicate files dropped.

    Raises
    ------
    FileNotFoundError
        If a folder does not exist.
    ValueError
        If a folder holds no image, if its layout is not recognised, if a writer has forgeries
        but no genuine signature, or if two folders share a name.

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
    several = not isinstance(root, (str, bytes)) and not hasattr(root, "__fspath__")
    roots = [Path(r) for r in (root if several else [root])]
    if not roots:
        raise ValueError("no signature folder given")
    names = [r.resolve().name for r in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"data-set folders must have distinct names, got {names}")
    tables, layouts = [], {}
    for folder, name in zip(roots, names):
        table, layouts[name] = _read_one(folder)
        table["dataset"] = name
        if several:
            table["writer"] = qualified_writers(table)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table = table.sort_values(["writer", "genuine", "path"], ascending=[True, False, True], ignore_index=True)
    table.attrs["layout"] = layouts if several else layouts[names[0]]
    table.attrs["n_duplicates"] = 0
    if drop_duplicates:
        table = drop_duplicate_files(table)
        if table.attrs["n_duplicates"]:
            warnings.warn(f"dropped {table.attrs['n_duplicates']} copies (the same gray levels) of images of the same writer",
                          stacklevel=2)
    return table


def qualified_writers(table):
    """Each row's writer named by its data set too (``"cedar/12"``), as :func:`load_signatures` names
    writers read from several folders: the names that identify a writer across data sets.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with a ``writer`` column and, optionally, ``dataset``.

    Returns
    -------
    writers : pandas.Series of str, shape (n_rows,)
        ``dataset/writer``; a name that already starts with its data set's, or a table without a
        ``dataset`` column, is kept as it is.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"writer": ["12", "cedar/3"], "dataset": ["cedar", "cedar"]})
    >>> qualified_writers(table).tolist()
    ['cedar/12', 'cedar/3']
    """
    writers = table["writer"].astype(str)
    if "dataset" not in table:
        return writers
    prefix = table["dataset"].astype(str) + "/"
    done = pd.Series([w.startswith(p) for w, p in zip(writers, prefix)], index=table.index)
    return writers.where(done, prefix + writers)
