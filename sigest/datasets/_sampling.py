"""Sampling from a signature table: random images, triplets, pairs and writer-disjoint splits.

Every function takes the table returned by :func:`~sigest.datasets.load_signatures` (or the
``table`` of :func:`~sigest.datasets.make_signatures`): one row per image with the columns
``writer`` and ``genuine`` and one item column, ``path`` (file paths) or ``image`` (2-D arrays).
"""

from itertools import combinations, product

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

__all__ = ["random_images", "make_triplets", "make_pairs", "make_reference_sets", "split_writers", "writer_groups",
           "check_writers"]

_NEGATIVES = ("skilled", "random", "both")


def _as_table(root_or_table):
    if isinstance(root_or_table, pd.DataFrame):
        missing = {"writer", "genuine"} - set(root_or_table.columns)
        if missing:
            raise ValueError(f"signature table lacks the column(s) {sorted(missing)}")
        _item_column(root_or_table)
        return root_or_table
    from ._layouts import load_signatures

    return load_signatures(root_or_table)


def _item_column(table):
    for column in ("path", "image"):
        if column in table.columns:
            return column
    raise ValueError("signature table needs a 'path' or an 'image' column")


def _select_writers(table, writers):
    if writers is None:
        return table
    writers = [str(w) for w in writers]
    unknown = sorted(set(writers) - set(table["writer"].astype(str)))
    if unknown:
        raise ValueError(f"writers not in the table: {', '.join(unknown[:10])}")
    return table[table["writer"].astype(str).isin(writers)]


def _sampling_setup(table, writers, random_state):
    """The table (restricted to ``writers``), its item column and the random state a sampler draws with."""
    table = _select_writers(_as_table(table), writers)
    return table, _item_column(table), check_random_state(random_state)


def _writers_genuine(table, column):
    """Each writer's name, rows and genuine items, writers in sorted order."""
    for writer, group in table.groupby("writer", sort=True):
        yield writer, group, group.loc[group["genuine"], column].tolist()


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def random_images(root_or_table, n, *, genuine=None, random_state=None):
    """Pick ``n`` images at random, without replacement.

    Parameters
    ----------
    root_or_table : str, path-like or pandas.DataFrame
        A data folder (read with :func:`load_signatures`) or a signature table.
    n : int
        How many images; at most the number available.
    genuine : bool or None, default=None
        Restrict to genuine (True) or forged (False) images; None takes both.
    random_state : int, RandomState instance or None, default=None
        Seed of the selection.

    Returns
    -------
    table : pandas.DataFrame of shape (n, n_columns)
        The selected rows, in random order, with a fresh index.
    """
    table = _as_table(root_or_table)
    if genuine is not None:
        table = table[table["genuine"] == bool(genuine)]
    if not 0 <= n <= len(table):
        raise ValueError(f"cannot pick n={n} images from {len(table)} available")
    rng = check_random_state(random_state)
    return table.iloc[rng.permutation(len(table))[:n]].reset_index(drop=True)


def _negative_pool(table, writer, negatives):
    same = table["writer"] == writer
    parts = []
    if negatives in ("skilled", "both"):
        parts.append(table[same & ~table["genuine"]])
    if negatives in ("random", "both"):
        parts.append(table[~same & table["genuine"]])
    return pd.concat(parts)


def make_triplets(table, *, n_per_writer=None, negatives="both", writers=None, random_state=None):
    """Build (anchor, positive, negative) triplets.

    Anchor and positive are two genuine signatures of one writer; the negative is a skilled forgery
    of that writer, another writer's genuine signature (a random forgery) or either.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (columns ``writer``, ``genuine`` and ``path`` or ``image``).
    n_per_writer : int or None, default=None
        Triplets per writer; None makes one per unordered pair of genuine signatures.
    negatives : {"skilled", "random", "both"}, default="both"
        Where negatives come from.
    writers : sequence of str or None, default=None
        Restrict anchors to these writers (random negatives still come from the whole table).
    random_state : int, RandomState instance or None, default=None
        Seed of the sampling.

    Returns
    -------
    triplets : pandas.DataFrame of shape (n_triplets, 5)
        Columns ``anchor``, ``positive``, ``negative`` (items of the table's item column),
        ``writer`` and ``negative_kind`` (``"skilled"`` or ``"random"``).
    """
    _check_choice("negatives", negatives, _NEGATIVES)
    table = _as_table(table)
    column = _item_column(table)
    rng = check_random_state(random_state)
    rows = []
    for writer, group in _select_writers(table, writers).groupby("writer", sort=True):
        genuine = group.loc[group["genuine"], column].tolist()
        pairs = list(combinations(range(len(genuine)), 2))
        pool = _negative_pool(table, writer, negatives)
        if not pairs or pool.empty:
            continue
        if n_per_writer is not None:
            chosen = rng.choice(len(pairs), size=n_per_writer, replace=n_per_writer > len(pairs))
            pairs = [pairs[i] for i in chosen]
        picks = rng.randint(len(pool), size=len(pairs))
        for (i, j), k in zip(pairs, picks):
            negative = pool.iloc[k]
            kind = "skilled" if negative["writer"] == writer else "random"
            rows.append((genuine[i], genuine[j], negative[column], writer, kind))
    if not rows:
        raise ValueError("no triplet can be made: writers need two genuine signatures and a negative")
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative", "writer", "negative_kind"])


def make_pairs(
    table,
    *,
    protocol="exhaustive",
    forgeries="skilled",
    n_per_writer=10,
    n_random_per_writer=None,
    writers=None,
    random_state=None,
):
    """Build (reference, questioned, label) pairs, label 1 for same genuine writer, 0 for a forgery.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (columns ``writer``, ``genuine`` and ``path`` or ``image``).
    protocol : {"exhaustive", "balanced"}, default="exhaustive"
        ``"exhaustive"`` is the field's protocol: every genuine/genuine pair (i < j) and every
        genuine/skilled-forgery pair of each writer. ``"balanced"`` samples ``n_per_writer``
        genuine pairs and ``n_per_writer`` forgery pairs per writer.
    forgeries : {"skilled", "random", "both"}, default="skilled"
        Kind of negative pairs: skilled forgeries of the writer, other writers' genuine signatures
        (random forgeries), or both.
    n_per_writer : int, default=10
        Pairs of each label per writer with ``protocol="balanced"``.
    n_random_per_writer : int or None, default=None
        Random-forgery pairs per writer with ``protocol="exhaustive"``; None makes as many as the
        writer has genuine/skilled-forgery pairs (or genuine pairs when it has no forgery).
    writers : sequence of str or None, default=None
        Restrict references to these writers (random forgeries then also come from them only).
    random_state : int, RandomState instance or None, default=None
        Seed of the sampling.

    Returns
    -------
    pairs : pandas.DataFrame of shape (n_pairs, 5)
        Columns ``reference``, ``questioned`` (items), ``label`` (int, 1 genuine, 0 forgery),
        ``writer`` (the claimed writer) and ``kind`` (``"genuine"``, ``"skilled"`` or ``"random"``).
    """
    _check_choice("protocol", protocol, ("exhaustive", "balanced"))
    _check_choice("forgeries", forgeries, _NEGATIVES)
    table, column, rng = _sampling_setup(table, writers, random_state)
    rows = []
    for writer, group, genuine in _writers_genuine(table, column):
        skilled = group.loc[~group["genuine"], column].tolist()
        others = table.loc[(table["writer"] != writer) & table["genuine"], column].tolist()
        positive = list(combinations(genuine, 2))
        negative = []
        if forgeries in ("skilled", "both"):
            negative += [(g, f, "skilled") for g, f in product(genuine, skilled)]
        n_random = n_random_per_writer
        if n_random is None:
            n_random = len(genuine) * len(skilled) or len(positive)
        if forgeries in ("random", "both") and others and genuine:
            refs = rng.randint(len(genuine), size=n_random)
            picks = rng.choice(len(others), size=n_random, replace=n_random > len(others))
            negative += [(genuine[r], others[o], "random") for r, o in zip(refs, picks)]
        if protocol == "balanced":
            positive = _subsample(positive, n_per_writer, rng)
            negative = _subsample(negative, n_per_writer, rng)
        rows += [(a, b, 1, writer, "genuine") for a, b in positive]
        rows += [(a, b, 0, writer, kind) for a, b, kind in negative]
    if not rows:
        raise ValueError("no pair can be made from this table")
    return pd.DataFrame(rows, columns=["reference", "questioned", "label", "writer", "kind"])


def make_reference_sets(table, k, *, writers=None, random_state=None):
    """Questioned signatures, each with ``k`` genuine references of the claimed writer.

    For each writer with more than ``k`` genuine signatures, ``k`` are drawn as references; every
    other genuine signature (label 1) and every skilled forgery (label 0) of the writer is
    questioned against them. Writers with ``k`` or fewer genuine signatures are skipped.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (columns ``writer``, ``genuine`` and ``path`` or ``image``).
    k : int
        References per writer, at least 1.
    writers : sequence of str or None, default=None
        Restrict to these writers.
    random_state : int, RandomState instance or None, default=None
        Seed of the reference draws.

    Returns
    -------
    sets : pandas.DataFrame of shape (n_questioned, k + 3)
        Columns ``questioned``, ``ref_1`` .. ``ref_k`` (items), ``label`` (int, 1 genuine, 0 skilled
        forgery) and ``writer``; ``sets[["questioned", "ref_1", ..., "ref_k"]]`` is the row input of
        :class:`~sigest.VotingVerifier`.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive number of references, got {k!r}")
    table, column, rng = _sampling_setup(table, writers, random_state)
    rows = []
    for writer, group, genuine in _writers_genuine(table, column):
        if len(genuine) <= k:
            continue
        order = rng.permutation(len(genuine))
        refs = [genuine[i] for i in order[:k]]
        rows += [(genuine[i], *refs, 1, writer) for i in order[k:]]
        rows += [(f, *refs, 0, writer) for f in group.loc[~group["genuine"], column]]
    if not rows:
        raise ValueError(f"no writer has more than k={k} genuine signatures")
    return pd.DataFrame(rows, columns=["questioned", *(f"ref_{i}" for i in range(1, k + 1)), "label", "writer"])


def _subsample(items, n, rng):
    if len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), size=n, replace=False))]


def split_writers(table, *, test_size=0.25, test_writers=None, random_state=None):
    """Split a table into train and test tables with no writer in both.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (a ``writer`` column).
    test_size : float or int, default=0.25
        Fraction (float in (0, 1)) or number (int) of writers held out for test.
    test_writers : sequence of str or None, default=None
        Use exactly these test writers instead of a random draw.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.

    Returns
    -------
    train, test : pandas.DataFrame
        The rows of the train writers and the rows of the test writers.
    """
    writers = np.array(sorted(table["writer"].astype(str).unique()))
    if test_writers is None:
        n_test = int(round(test_size * len(writers))) if isinstance(test_size, float) else int(test_size)
        if not 0 < n_test < len(writers):
            raise ValueError(f"test_size={test_size!r} leaves no writer on one side of {len(writers)} writers")
        test_writers = check_random_state(random_state).choice(writers, size=n_test, replace=False)
    test = _select_writers(table, test_writers)
    train = table.drop(index=test.index)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def writer_groups(table):
    """Integer writer codes to pass as ``groups`` to ``GroupKFold`` or ``GridSearchCV.fit``.

    Parameters
    ----------
    table : pandas.DataFrame
        Any table with a ``writer`` column (images, pairs or triplets).

    Returns
    -------
    groups : ndarray of shape (n_rows,)
        One integer per distinct writer, so that no writer is in a train and a test fold at once.
    """
    return pd.factorize(table["writer"].astype(str), sort=True)[0]


def check_writers(table, *, min_genuine=2, min_forged=0):
    """Refuse, before any work, a table with writers that cannot be trained or evaluated on.

    Parameters
    ----------
    table : pandas.DataFrame
        Signature table (``writer``, ``genuine``).
    min_genuine : int, default=2
        Genuine signatures each writer needs (two make the smallest genuine pair).
    min_forged : int, default=0
        Skilled forgeries each writer needs.

    Returns
    -------
    table : pandas.DataFrame
        Unchanged.

    Raises
    ------
    ValueError
        Naming the writers that fall short.
    """
    counts = table.groupby("writer")["genuine"].agg(genuine="sum", total="size")
    counts["forged"] = counts["total"] - counts["genuine"]
    short = counts[(counts["genuine"] < min_genuine) | (counts["forged"] < min_forged)]
    if len(short):
        names = ", ".join(f"{w} ({int(r.genuine)} genuine, {int(r.forged)} forged)"
                          for w, r in short.head(10).iterrows())
        raise ValueError(f"{len(short)} writer(s) have fewer than {min_genuine} genuine signatures"
                         f"{f' or {min_forged} forgeries' if min_forged else ''}: {names}"
                         f"{' ...' if len(short) > 10 else ''}; remove them from the data")
    return table
