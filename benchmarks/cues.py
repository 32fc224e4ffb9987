"""Writer-free cues: what tells a data set's forgeries apart without looking at any reference?

A verifier should compare the questioned signature with the claimed writer's references. If a
property of the questioned image *alone* separates forgeries from genuine signatures across
writers, it is a trace of how the data set was collected (other pens, other scanner settings), and
a model that sees it can score well on the benchmark and fail on real documents. This script
measures such traces, so that every accuracy figure can be read against them:

1. For every image of a cache (``sigest prepare``), global measures at the scan's own resolution:
   ink pixels, stroke width, ink box height and width, 8-connected ink components, the mean
   and spread of the ink's gray levels, and the spread of its darkness (255 - gray level) over
   its mean, which no pen's or scanner's overall darkness changes. Per data set: the EER of each
   measure alone, genuine vs skilled forgeries, all writers pooled, no reference (50 % = no cue;
   the better of the two directions is reported).
2. With ``--embeddings`` (files of ``benchmarks/recipe.py --save-embeddings`` made from the same
   cache): a logistic regression on the questioned embedding alone, fitted on the training
   writers, EER on the test writers; and the 5-reference control of the ink comparison: the
   distance ratio plus the ink *differences* (what sigest ships) against the ratio plus the
   questioned image's own ink, each calibrated on the validation writers. If the ink lever were
   a one-sided trace, the second would do as well as the first. The same control for the ink's
   gray levels (its darkness and their spread), which sigest does not compare: their differences
   to the references' against the questioned image's own, both beside the ink differences.

Usage: python benchmarks/cues.py CACHE.npz [--embeddings RUN.npz ...] [--draws 3]
"""

import argparse

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sigest.cache import cache_preprocessor, load_cache
from sigest.metrics import equal_error_rate
from sigest.preprocessing import functional as F
from sigest.verification import ink_difference

from scoring import _mutual  # benchmarks/scoring.py, beside this script

MEASURES = ("ink pixels", "stroke width", "box height", "box width", "ink components", "ink gray mean", "ink gray spread",
            "ink darkness variation")


def page_measures(path, preprocessor):
    """The :data:`MEASURES` of one image, on its ink as ``preprocessor`` finds it on the page: list of 8 floats."""
    gray, mask = preprocessor.ink_on_page(path)
    ink, stroke = F.ink_measures(mask)
    _, components = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    levels = gray[mask].astype(np.float64)
    darkness = 255.0 - levels
    return [ink, stroke, *mask.shape, components, levels.mean(), levels.std(), darkness.std() / darkness.mean()]


def single_measure_eer(measures, table):
    """Per data set and measure: EER (%) of the measure alone on genuine vs skilled, the better direction."""
    out = {}
    for dataset in np.unique(table["dataset"]):
        rows = np.flatnonzero(table["dataset"].to_numpy() == dataset)
        genuine = table["genuine"].to_numpy()[rows]
        eers = [equal_error_rate(genuine, measures[rows, j])[0] for j in range(measures.shape[1])]
        out[dataset] = [100 * min(e, 1 - e) for e in eers]
    return pd.DataFrame(out, index=MEASURES).round(1)


def pen_measures(measures):
    """Positive per-image measures of the pen from :data:`MEASURES` rows: ink pixels, stroke width, ink darkness
    (255 - mean gray level) and the spread of its gray levels plus one (binary scans have none): (n, 4)."""
    column = {name: measures[:, j] for j, name in enumerate(MEASURES)}
    return np.column_stack([column["ink pixels"], column["stroke width"], 255.0 - column["ink gray mean"],
                            column["ink gray spread"] + 1.0])


def _ratio_rows(data, pen, role, rng, k=5):
    """Per questioned signature of ``role``'s writers: data set, label, and the columns log distance ratio, the
    differences of the ``pen`` measures (n_images, m) to the references' (:func:`ink_difference`), and the
    questioned image's own log ``pen`` measures: (n, 1 + 2 m)."""
    E, writer, genuine = data["embeddings"], data["writer"], data["genuine"]
    members = np.flatnonzero(data["role"] == role)
    parts = []
    for w in np.unique(writer[members]):
        own = members[writer[members] == w]
        shuffled = rng.permutation(own[genuine[own]])
        refs, questioned = shuffled[:k], np.concatenate([shuffled[k:], own[~genuine[own]]])
        mutual = _mutual(E[refs]).mean()
        ratio = np.log(np.linalg.norm(E[questioned][:, None] - E[refs][None], axis=2).mean(axis=1) / mutual)
        pair_pen = np.concatenate([pen[questioned][:, None], np.repeat(pen[refs][None], len(questioned), axis=0)], axis=1)
        parts.append((data["dataset"][questioned], genuine[questioned],
                      np.column_stack([ratio, ink_difference(pair_pen), np.log(pen[questioned])])))
    return [np.concatenate(p) for p in zip(*parts)]


def embedding_cues(path, pen, draws):
    """Rows (rule, test data set, EER %) for one embeddings file made from the cache whose :func:`pen_measures`
    are ``pen``."""
    data = dict(np.load(path, allow_pickle=False))
    E, genuine, role, dataset = data["embeddings"], data["genuine"], data["role"], data["dataset"]
    rows = []
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    probe.fit(E[role == "train"], genuine[role == "train"])
    scores = probe.decision_function(E)
    for name in np.unique(dataset[role == "test"]):
        mask = (role == "test") & (dataset == name)
        rows.append(("embedding alone, no reference", name, 100 * equal_error_rate(genuine[mask], scores[mask])[0]))
    # columns of _ratio_rows: 0 ratio, 1-4 differences (ink pixels, stroke width, darkness, gray spread), 5-8 own
    rules = {"k=5 ratio": [0], "k=5 ratio + ink differences": [0, 1, 2], "k=5 ratio + questioned ink": [0, 5, 6],
             "k=5 ratio + ink and gray differences": [0, 1, 2, 3, 4],
             "k=5 ratio + ink differences + questioned gray": [0, 1, 2, 7, 8]}
    for draw in range(draws):
        rng = np.random.RandomState(draw)
        _, vy, vX = _ratio_rows(data, pen, "valid", rng)
        td, ty, tX = _ratio_rows(data, pen, "test", rng)
        for rule, columns in rules.items():
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(vX[:, columns], vy)
            s = model.decision_function(tX[:, columns])
            rows += [(rule, name, 100 * equal_error_rate(ty[td == name], s[td == name])[0]) for name in np.unique(td)]
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("--embeddings", nargs="*", default=[])
    parser.add_argument("--draws", type=int, default=3, help="reference draws per embeddings file")
    parser.add_argument("--jobs", type=int, default=-1)
    args = parser.parse_args()
    cache = load_cache(args.cache)
    preprocessor = cache_preprocessor(cache)
    measures = np.array(Parallel(n_jobs=args.jobs, prefer="threads", batch_size=32)(
        delayed(page_measures)(p, preprocessor) for p in cache.table["path"]))
    print("EER (%) of one measure of the questioned image alone, genuine vs skilled, all writers pooled:")
    print(single_measure_eer(measures, cache.table).to_string())
    rows = [(path, *row) for path in args.embeddings for row in embedding_cues(path, pen_measures(measures), args.draws)]
    if rows:
        frame = pd.DataFrame(rows, columns=["file", "rule", "test", "EER"])
        per_file = frame.groupby(["rule", "test", "file"])["EER"].mean()
        print(f"\nEER (%) on test writers, mean and sd over {len(args.embeddings)} files:")
        print(per_file.groupby(["rule", "test"]).agg(["mean", "std"]).round(1).unstack("test").to_string())


if __name__ == "__main__":
    main()
