"""Does a lighter or darker ink in the questioned signature (another pen, another scanner) change the verdict?

A writer's references and a questioned signature are rarely written with one pen and scanned on one
machine; the data sets' genuine signatures were (one sitting per writer). This script measures how
the library's verifier answers when only the questioned image's ink intensity changes.

Reads the files ``benchmarks/recipe.py --save`` writes (one per writer fold). For each run, as
``sigest train`` builds the verifier: the network whitened on the training writers' genuine
signatures (:func:`sigest.training.fit_whitening`, shrinkage 0.1), the pair head
(:func:`sigest.training.fit_pair_head`) and the 5-reference voter
(:func:`sigest.training.fit_reference_voter`, with ink) fitted on the validation writers. On the test
writers, every genuine signature and skilled forgery left after drawing 5 genuine references is
questioned, first as preprocessed, then with its ink's intensity multiplied by each ``--factors``
value (the preprocessed image times the factor, clipped to [0, 1]: a factor below 1 is a lighter ink;
the ink measures and the references unchanged). Per factor and test data set: the voter's EER
(genuine vs skilled, its own threshold on the test scores) and its FRR / FAR at the threshold chosen
on the validation writers; means and sd over runs and reference draws.

With ``--normalize-ink Q``, every image (training, validation and test, and each changed one) first goes
through ``PreprocessImage(normalize_ink=Q)``'s step, so that the Q-th percentile of its ink's darkness
is black: for networks trained on a cache made with ``sigest prepare --normalize-ink Q``, which no
global ink intensity can move.

Usage: python benchmarks/ink_shift.py CACHE.npz RUN.pt [...] [--factors 0.7 0.85 1.2] [--draws 3] [--normalize-ink 95]
"""

import argparse

import numpy as np
import pandas as pd

from sigest.cache import cache_images, load_cache
from sigest.metrics import equal_error_rate
from sigest.preprocessing import functional as F
from sigest.training import _reference_rows, fit_pair_head, fit_reference_voter

from views import load_run, whitened_views  # benchmarks/views.py, beside this script


def normalized(images, percentile):
    """:func:`sigest.preprocessing.functional.normalize_ink` on preprocessed images (n, 1, H, W) in [0, 1], ink bright
    on a dark background (``invert=True``), as ``PreprocessImage(normalize_ink=percentile)`` applies it: a new array."""
    gray = np.rint(255.0 * (1.0 - images)).astype(np.uint8)
    return np.stack([F.to_float(F.normalize_ink(g[0], percentile))[None] for g in gray])


def shifted_rows(X, factor, normalize_ink=None):
    """The voter's input ``X`` (``{"images", "ink", "rows"}``) with each questioned image's intensity times ``factor``:
    the changed images are appended and the rows' first column points at them."""
    if factor == 1.0:
        return X
    questioned, position = np.unique(X["rows"][:, 0], return_inverse=True)
    changed = np.clip(X["images"][questioned] * factor, 0.0, 1.0).astype(np.float32)
    if normalize_ink is not None:
        changed = normalized(changed, normalize_ink)
    rows = X["rows"].copy()
    rows[:, 0] = len(X["images"]) + position
    return {"images": np.concatenate([X["images"], changed]), "ink": np.concatenate([X["ink"], X["ink"][questioned]]),
            "rows": rows}


def run_figures(path, images, cache, factors, draws, normalize_ink=None):
    """Rows (factor, draw, test data set, EER, FRR, FAR) of one saved run."""
    table = cache.table
    role, settings, weights, _ = load_run(path, table)
    writers, genuine = table["writer"].to_numpy().astype(str), table["genuine"].to_numpy()
    net, _ = whitened_views(settings, weights, images, (role == "train") & genuine, writers)
    frame = table.rename(columns={"index": "_row"})
    valid, test = frame[role == "valid"], frame[role == "test"]
    head = fit_pair_head(net, valid, images, ink=cache.ink)
    voter = fit_reference_voter(head, valid, images, ink=cache.ink, k=5)
    dataset = table["dataset"].to_numpy().astype(str)
    out = []
    for draw in range(draws):
        X, labels = _reference_rows(test, images, cache.ink, 5, 10_000, draw)
        for factor in factors:
            probability = voter.verify(shifted_rows(X, factor, normalize_ink))[0]
            accepted = probability >= voter.threshold
            for name in np.unique(dataset[X["rows"][:, 0]]):
                mask = dataset[X["rows"][:, 0]] == name
                y, s, a = labels[mask] == 1, probability[mask], accepted[mask]
                out.append({"file": path, "factor": factor, "draw": draw, "test": name,
                            "EER": equal_error_rate(y, s)[0], "FRR": float(np.mean(~a[y])), "FAR": float(np.mean(a[~y]))})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("runs", nargs="+", help="files of recipe.py --save")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.7, 0.85, 1.2],
                        help="multipliers of the questioned image's intensity (1.0, as scanned, is always measured)")
    parser.add_argument("--draws", type=int, default=3, help="random draws of the references per run")
    parser.add_argument("--normalize-ink", type=float, metavar="Q",
                        help="every image through PreprocessImage(normalize_ink=Q)'s step (networks trained so)")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    if cache.ink is None:
        parser.error("the cache holds no ink measures (make it with sigest prepare)")
    images = cache_images(cache)
    if args.normalize_ink is not None:
        images = normalized(images, args.normalize_ink)
    factors = [1.0] + [f for f in args.factors if f != 1.0]
    rows = []
    for path in args.runs:
        rows += run_figures(path, images, cache, factors, args.draws, args.normalize_ink)
        print(f"{path}: done", flush=True)
    per_run = pd.DataFrame(rows).groupby(["test", "factor", "file"])[["EER", "FRR", "FAR"]].mean() * 100
    print(f"{len(args.runs)} runs, {args.draws} reference draws each; % (mean and sd over runs)")
    print(per_run.groupby(["test", "factor"]).agg(["mean", "std"]).round(1).to_string())


if __name__ == "__main__":
    main()
