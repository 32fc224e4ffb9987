"""A preprocessed cache: every image of a signature table preprocessed once and stored in one ``.npz``.

In the spirit of sigver's ``process_dataset``: training, evaluation and benchmarks read the cache
instead of decoding and cleaning every image again. Images are kept as uint8 (ink bright on a dark
background, as :class:`~sigest.preprocessing.PreprocessImage` makes them, times 255), so the three
real data sets at 150x220 fit in a few tens of megabytes.
"""

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ._files import atomic_path
from .preprocessing import PreprocessImage, find_near_duplicates

__all__ = ["prepare_cache", "load_cache", "cache_images", "cache_preprocessor"]

_COLUMNS = ("path", "writer", "genuine", "dataset")


def prepare_cache(table, path, *, preprocessor=None, chunk_size=256, progress=True, drop_near_duplicates=True):
    """Preprocess every image of ``table`` once and save images and labels to ``path`` (``.npz``).

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table with ``path``, ``writer`` and ``genuine`` columns (and optionally
        ``dataset``), as :func:`sigest.datasets.load_signatures` returns.
    path : str or path-like
        The cache file to write; written atomically (a crash never leaves a truncated file).
    preprocessor : PreprocessImage or None, default=None
        The preprocessing to apply; None uses ``PreprocessImage(n_jobs=-1)`` (150x220).
    chunk_size : int, default=256
        Images preprocessed per step of the progress bar.
    progress : bool, default=True
        Show a progress bar (tqdm).
    drop_near_duplicates : bool, default=True
        Leave out each image that, once preprocessed, repeats another image of the same writer and
        kind (genuine or forged) up to a small shift: a copy of one scan cropped or re-saved, which
        :func:`~sigest.datasets.load_signatures`'s comparison of gray levels misses
        (:func:`~sigest.preprocessing.find_near_duplicates`); a warning names them.

    Returns
    -------
    path : pathlib.Path
        The file written.
    """
    from tqdm.auto import tqdm

    preprocessor = PreprocessImage(n_jobs=-1) if preprocessor is None else preprocessor
    if not len(table):
        raise ValueError("the signature table is empty")
    paths = table["path"].tolist()
    chunks, inks = [], []
    for start in tqdm(range(0, len(paths), chunk_size), desc="preprocessing", unit="chunk", disable=not progress):
        images, ink = preprocessor.transform_with_ink(paths[start : start + chunk_size])
        chunks.append(np.round(images[:, 0] * 255).astype(np.uint8))
        inks.append(ink)
    images, ink = np.concatenate(chunks), np.concatenate(inks)
    if drop_near_duplicates:
        keep = ~_near_duplicates(images, table)
        table, images, ink = table.loc[keep], images[keep], ink[keep]
    dataset = table["dataset"] if "dataset" in table.columns else pd.Series("", index=table.index)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=images,
        ink=ink,
        path=table["path"].to_numpy(dtype=str),
        writer=table["writer"].astype(str).to_numpy(dtype=str),
        genuine=table["genuine"].to_numpy(dtype=bool),
        dataset=dataset.astype(str).to_numpy(dtype=str),
        preprocessor=np.asarray(json.dumps({"class": type(preprocessor).__name__,
                                            "params": preprocessor.get_params()})),
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def _near_duplicates(images, table):
    """Rows of ``table`` whose preprocessed image repeats an earlier one of the same writer and kind: bool (n,)."""
    groups = table["writer"].astype(str).to_numpy() + np.where(table["genuine"].to_numpy(dtype=bool), "/genuine", "/forged")
    repeated = find_near_duplicates(images, groups)
    if repeated.any():
        names = ", ".join(str(p) for p in table["path"].to_numpy()[repeated][:5])
        warnings.warn(f"left out {int(repeated.sum())} image(s) that repeat another image of the same writer once "
                      f"preprocessed (copies of one scan, cropped or re-saved): {names}"
                      f"{', ...' if repeated.sum() > 5 else ''}", stacklevel=3)
    return repeated


def load_cache(path):
    """Read a cache written by :func:`prepare_cache`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    cache : sklearn.utils.Bunch
        ``images``: ndarray of shape (n_images, H, W), uint8 (ink bright);
        ``table``: pandas.DataFrame with ``path``, ``writer``, ``genuine``, ``dataset`` and ``index``
        (the row of ``images``);
        ``ink``: ndarray of shape (n_images, 2), each image's ink pixels and stroke width at its
        own resolution (:meth:`~sigest.preprocessing.PreprocessImage.transform_with_ink`), or None
        in a cache written before sigest kept them;
        ``preprocessor``: dict, the preprocessing's class name and parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cache file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            images = data["images"]
            ink = data["ink"] if "ink" in data.files else None
            table = pd.DataFrame({column: data[column] for column in _COLUMNS})
            preprocessor = json.loads(str(data["preprocessor"]))
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not a sigest cache ({type(exc).__name__}: {exc})") from None
    table["writer"] = table["writer"].astype(object)
    table["index"] = np.arange(len(table))
    return Bunch(images=images, ink=ink, table=table, preprocessor=preprocessor)


def cache_images(cache, index=None):
    """Images of a cache as network input: float32 of shape (n, 1, H, W) in [0, 1].

    Parameters
    ----------
    cache : Bunch
        As :func:`load_cache` returns.
    index : array-like of int or None
        Rows to take (``cache.table["index"]`` values); None takes all.
    """
    images = cache.images if index is None else cache.images[np.asarray(index)]
    out = images[:, None].astype(np.float32)
    out /= 255.0  # in place: a second float32 copy of every image would double the peak memory
    return out


def cache_preprocessor(cache, **overrides):
    """The :class:`~sigest.preprocessing.PreprocessImage` that made a cache's images (to put in a model).

    Parameters
    ----------
    cache : Bunch
        As :func:`load_cache` returns.
    **overrides
        Parameters to change (``n_jobs=None``, say).
    """
    params = {**cache.preprocessor["params"], **overrides}
    params["size"] = tuple(params["size"])
    return PreprocessImage(**params)
