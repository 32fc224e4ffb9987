"""Does calibrating on a few writers of a new data set make the threshold travel? (``sigest.training.calibrate``)

Reads networks trained with one data set left out (``recipe.py --test-datasets SET --save RUN.pt``) and
builds each run's pipeline as ``export_pretrained.py`` does (pair head and voter fitted on the run's
validation writers, of the other data sets). Then, ``--repeats`` times for each ``--n-local`` count, draws
that many writers of the left-out set, calibrates a copy of the model on them
(:func:`sigest.training.calibrate`: thresholds re-chosen; and with ``refit_voter=True``, the voter's weights
fitted anew) and scores the left-out set's other writers with the three models:

- the 5-reference voter (``reference_voter_``, rows of 5 genuine references, one draw per writer):
  EER, accuracy at the model's own voter threshold (the honest number) and at the EER threshold of
  these scores (the oracle), genuine vs skilled forgeries;
- single pairs (every genuine/genuine and genuine/skilled pair of a writer): the same three numbers for
  the pair classifier (its weights are not refitted, so only the threshold moves).

Usage: python benchmarks/calibration.py CACHE.npz RUN.pt [...] [--n-local 3 5 10] [--repeats 5]
"""

import argparse

import numpy as np
import pandas as pd
import torch

from sigest.cache import cache_images, load_cache
from sigest.datasets import make_reference_sets
from sigest.metrics import equal_error_rate, within_writer_pairs
from sigest.training import calibrate

from export_pretrained import pipeline_from_run  # benchmarks/export_pretrained.py, beside this script


def rates(genuine, scores, threshold):
    """(EER, accuracy at ``threshold``, accuracy at the EER threshold) of scores, genuine vs forgery."""
    eer, oracle = equal_error_rate(genuine, scores)
    return {"EER": eer, "honest": float(np.mean((scores >= threshold) == genuine)),
            "oracle": float(np.mean((scores >= oracle) == genuine))}


def voter_scores(voter, images, ink, rows, chunk=256):
    """The voter's genuine probability of rows of image indices (n, 1 + k), in chunks (each row holds 1 + k images)."""
    return np.concatenate([voter.predict_proba({"images": images[part], "ink": ink[part]})[:, 1]
                           for part in np.array_split(rows, max(1, len(rows) // chunk))])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("runs", nargs="+", help="files of recipe.py --test-datasets SET --save")
    parser.add_argument("--n-local", type=int, nargs="+", default=[3, 5, 10], help="writers to calibrate on")
    parser.add_argument("--repeats", type=int, default=5, help="draws of the calibration writers per count")
    parser.add_argument("--k", type=int, default=5, help="references per questioned signature")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    if cache.ink is None:
        parser.error("the cache holds no ink measures (make it with sigest prepare)")
    images, ink = cache_images(cache), cache.ink
    table = cache.table.rename(columns={"index": "_row"})
    results = []
    for path in args.runs:
        run = torch.load(path, map_location="cpu", weights_only=False)  # our own training output
        model = pipeline_from_run(run, cache)
        test = table[~table["writer"].isin([*run["train_writers"], *run["valid_writers"]])]
        name = "+".join(sorted(test["dataset"].unique()))
        sets = make_reference_sets(test[["writer", "genuine"]].assign(path=test["_row"].to_numpy()), args.k,
                                   random_state=0)
        rows = sets[["questioned", *(f"ref_{i}" for i in range(1, args.k + 1))]].to_numpy(dtype=int)
        row_genuine = sets["label"].to_numpy() == 1
        first, second, pair_label = within_writer_pairs(test["writer"].to_numpy(), test["genuine"].to_numpy())
        at = test["_row"].to_numpy()
        pair_at = np.stack([first, second], axis=1)
        pair_scores = model[-1].proba_at(model[-1].head_views(images[at]), pair_at, ink=ink[at][pair_at])
        pair_writer = test["writer"].to_numpy()[first]  # pair scores serve every variant (pair weights are kept)
        before = voter_scores(model.reference_voter_, images, ink, rows)
        rng = np.random.RandomState(0)
        writers = np.unique(test["writer"])
        for n_local in args.n_local:
            for repeat in range(args.repeats):
                local = rng.choice(writers, n_local, replace=False)
                mine = test[test["writer"].isin(local)]
                variants = [("validation writers", model, before)]
                for refit in (False, True):
                    calibrated = calibrate(model, mine.drop(columns="_row"), images=images[mine["_row"].to_numpy()],
                                           ink=ink[mine["_row"].to_numpy()], k=args.k, refit_voter=refit)
                    # calibrate keeps the network and, without refit, the voter's weights: the same scores
                    scores = voter_scores(calibrated.reference_voter_, images, ink, rows) if refit else before
                    variants.append(("calibrated, voter refitted" if refit else "calibrated", calibrated, scores))
                keep, keep_pairs = ~sets["writer"].isin(local).to_numpy(), ~np.isin(pair_writer, local)
                common = {"test": name, "run": path, "n_local": n_local, "repeat": repeat}
                for model_name, fitted, scores in variants:
                    results.append({**common, "threshold from": model_name, "rule": "k=5 voter",
                                    **rates(row_genuine[keep], scores[keep], fitted.reference_voter_.threshold)})
                    results.append({**common, "threshold from": model_name, "rule": "single pair",
                                    **rates(pair_label[keep_pairs] == 1, pair_scores[keep_pairs],
                                            fitted[-1].threshold)})
        print(f"{path}: {name} left out, {len(writers)} writers", flush=True)
    frame = pd.DataFrame(results)
    frame["gap"] = frame["oracle"] - frame["honest"]
    summary = frame.groupby(["rule", "test", "n_local", "threshold from"])[["EER", "honest", "oracle", "gap"]]
    print(f"{args.repeats} draws of the calibration writers per count; the other writers of the left-out set "
          "scored; % (mean over draws and runs; gap = oracle - honest accuracy)")
    print((summary.mean() * 100).round(2).to_string())


if __name__ == "__main__":
    main()
