"""Compare ways of scoring a questioned signature against k references, on saved embeddings.

Reads the files ``benchmarks/recipe.py --save-embeddings`` writes (one per writer fold and seed:
every image's embedding, writer, data set and role). For each test writer, ``k`` genuine
signatures are drawn as references; the questioned signatures are the writer's other genuine
ones, its skilled forgeries and as many genuine signatures of other test writers (random
forgeries). Each scoring rule turns (questioned, references) into one number, higher = more
genuine:

- ``raw``: minus the mean distance to the references;
- ``nearest``: minus the distance to the closest reference;
- ``ratio``: ``raw`` divided by the references' mean mutual distance (sigest's ``normalized`` voting);
- ``nearest_ratio``: ``nearest`` divided by the same;
- ``centroid_ratio``: minus the distance to the references' centroid over their mean distance to it;
- ``znorm``: the mean distance standardised by the mean and spread of the references' mutual distances;
- ``cohort``: symmetric score normalisation (s-norm) against a cohort of the training writers'
  genuine signatures: the mean distance standardised by the distances of the references and of
  the questioned signature to their ``--top`` closest cohort signatures;
- ``wd_logistic``: a writer-dependent logistic regression per writer, the k references against the
  cohort as negatives (the writer-dependent classifiers of SigNet, on the learned embedding);
- ``ratio_ink`` (files that hold the images' ink measures): ``log ratio`` and the ink differences of
  :func:`sigest.verification.ink_difference` combined by a logistic regression fitted on the
  validation writers' genuine and skilled rows (``VotingVerifier(compare_ink=True)``).

Per rule and test data set: EER on genuine vs skilled forgeries with one global threshold, and the
accuracy at the threshold chosen on the validation writers (scored the same way) beside the
accuracy at the test-oracle threshold. Means over files and reference draws.

Then single pairs (k=1, the number papers print), every genuine/genuine and genuine/skilled pair of
each test writer: EER with a global threshold and per writer, and accuracy at the validation
writers' EER threshold beside the oracle's, for the pair rules

- ``distance``: minus the embedding distance;
- ``head``: sigest's pair head, a logistic regression on ``[|a - b|, a * b]`` fitted as
  :func:`sigest.training.fit_pair_head` fits it (balanced pairs of the validation writers, skilled
  and random forgeries, 40 of each label per writer);
- ``head_ink`` (files with ink measures): the same with the pair's ink differences
  (``LogisticSiameseRegression(compare_ink=True)``).

With ``--whitening S``, every embedding is first whitened as ``sigest.training.fit_whitening`` does in
the library: by the within-writer spread of the training writers' genuine signatures
(:func:`sigest.nn.within_writer_whitening`, shrinkage S), then normalised to unit length again.

Usage: python benchmarks/scoring.py RUN_EMBEDDINGS.npz [...] [--k 5] [--draws 5] [--top 100] [--whitening 0.1]
"""

import argparse

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from sigest.datasets import make_pairs
from sigest.metrics import equal_error_rate, per_writer_eer, within_writer_pairs
from sigest.nn import within_writer_whitening
from sigest.verification import LogisticSiameseRegression, VotingVerifier, ink_difference, pair_features

RULES = ("raw", "nearest", "ratio", "nearest_ratio", "centroid_ratio", "znorm", "cohort", "wd_logistic")


def _mutual(R):
    """Distances between every two of the references R (k, d): array of shape (k * (k - 1) / 2,)."""
    i, j = np.triu_indices(len(R), 1)
    return np.linalg.norm(R[i] - R[j], axis=1)


def _cohort_stats(X, cohort, top):
    """Mean and spread of each row of X's distances to its ``top`` closest cohort embeddings."""
    d = np.linalg.norm(X[:, None] - cohort[None], axis=2)
    closest = np.sort(d, axis=1)[:, :top]
    return closest.mean(axis=1), closest.std(axis=1) + 1e-6


def score_writer(R, Q, cohort, top, rules=RULES):
    """Scores of the questioned embeddings Q (n, d) against references R (k, d), one column per rule in ``rules``."""
    D = np.linalg.norm(Q[:, None] - R[None], axis=2)  # (n, k)
    mean = D.mean(axis=1)
    mutual = _mutual(R)

    def s_norm():
        ref_mu, ref_sd = _cohort_stats(R, cohort, top)
        q_mu, q_sd = _cohort_stats(Q, cohort, top)
        return -0.5 * ((mean - ref_mu.mean()) / ref_sd.mean() + (mean - q_mu) / q_sd)

    def wd_logistic():
        wd = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        wd.fit(np.vstack([R, cohort]), np.r_[np.ones(len(R)), np.zeros(len(cohort))])
        return wd.decision_function(Q)

    def centroid_ratio():
        centre = R.mean(axis=0)
        return -np.linalg.norm(Q - centre, axis=1) / np.linalg.norm(R - centre, axis=1).mean()

    every = {
        "raw": lambda: -mean,
        "nearest": lambda: -D.min(axis=1),
        "ratio": lambda: -mean / mutual.mean(),
        "nearest_ratio": lambda: -D.min(axis=1) / mutual.mean(),
        "centroid_ratio": centroid_ratio,
        "znorm": lambda: -(mean - mutual.mean()) / (mutual.std() + 1e-6),
        "cohort": s_norm,
        "wd_logistic": wd_logistic,
    }
    return {rule: every[rule]() for rule in rules}


def score_role(data, role, k, rng, top, cohort_size, rules=RULES):
    """One row per questioned signature of the writers in ``role``: writer, kind, the score of each of ``rules``,
    and the images compared (``questioned``, the row number; ``references``, a tuple of k row numbers)."""
    E, writer, genuine = data["embeddings"], data["writer"], data["genuine"]
    train = np.flatnonzero((data["role"] == "train") & genuine)
    cohort = E[rng.choice(train, size=min(cohort_size, len(train)), replace=False)]
    rows = []
    members = np.flatnonzero(data["role"] == role)
    for w in np.unique(writer[members]):
        own = members[writer[members] == w]
        g = rng.permutation(own[genuine[own]])
        if len(g) <= k:
            continue
        refs, others = g[:k], g[k:]
        skilled = own[~genuine[own]]
        pool = members[(writer[members] != w) & genuine[members]]
        randoms = rng.choice(pool, size=min(len(others), len(pool)), replace=False)
        questioned = np.concatenate([others, skilled, randoms])
        kinds = ["genuine"] * len(others) + ["skilled"] * len(skilled) + ["random"] * len(randoms)
        scores = score_writer(E[refs], E[questioned], cohort, top, rules)
        if "ink" in data:
            ink = data["ink"]
            rows_ink = np.concatenate([ink[questioned][:, None], np.repeat(ink[refs][None], len(questioned), 0)], 1)
            scores["ink_diff"] = list(ink_difference(rows_ink))
        rows.append(pd.DataFrame({"writer": w, "dataset": data["dataset"][questioned], "kind": kinds, **scores,
                                  "questioned": questioned, "references": [tuple(refs)] * len(questioned)}))
    return pd.concat(rows, ignore_index=True)


def add_ratio_ink(test, valid, ratio="ratio", out="ratio_ink"):
    """The ``out`` rule on both tables: the log of the (negative) distance ratio in column ``ratio`` and the
    ``ink_diff`` column, combined by a logistic regression fitted on ``valid``'s genuine/skilled rows, as
    ``VotingVerifier(voting="normalized", compare_ink=True)`` fits its calibration."""
    def features(frame):
        return np.column_stack([np.log(-frame[ratio]), np.stack(frame["ink_diff"].to_numpy())])

    skilled = valid[valid["kind"] != "random"]
    calibrator = LogisticRegression(C=VotingVerifier(None).C).fit(features(skilled), skilled["kind"] == "genuine")
    return (test.assign(**{out: calibrator.decision_function(features(test))}),
            valid.assign(**{out: calibrator.decision_function(features(valid))}))


def accuracy(scores, kinds, threshold):
    """Accuracy on genuine vs skilled forgeries when genuine means score >= threshold."""
    mask = kinds != "random"
    return float(np.mean((scores[mask] >= threshold) == (kinds[mask] == "genuine")))


def evaluate(test, valid):
    """Per test data set and rule: EER, honest and oracle accuracy."""
    out = []
    rules = RULES + (("ratio_ink",) if "ratio_ink" in test else ())
    vmask = valid["kind"].to_numpy() != "random"
    for dataset, group in test.groupby("dataset"):
        kinds = group["kind"].to_numpy()
        mask = kinds != "random"
        for rule in rules:
            scores = group[rule].to_numpy()
            eer, oracle = equal_error_rate(kinds[mask] == "genuine", scores[mask])
            chosen = equal_error_rate(valid["kind"].to_numpy()[vmask] == "genuine", valid[rule].to_numpy()[vmask])[1]
            out.append({"test": dataset, "rule": rule, "EER": eer, "acc": accuracy(scores, kinds, chosen),
                        "acc_oracle": accuracy(scores, kinds, oracle)})
    return out


def pair_rules(data, seed=0):
    """Per test data set and pair rule: EER (global, per writer), honest and oracle accuracy."""
    E, ink = data["embeddings"], data.get("ink")

    def inputs(a, b, rule):
        pair = np.stack([E[a], E[b]], axis=1)
        features = pair_features(pair)
        if rule == "head_ink":
            scaling = LogisticSiameseRegression().ink_scaling  # as the library's pair head scales them
            features = np.hstack([features, scaling * ink_difference(np.stack([ink[a], ink[b]], axis=1))])
        return features

    def exhaustive(role):
        rows = np.flatnonzero(data["role"] == role)
        first, second, label = within_writer_pairs(data["writer"][rows], data["genuine"][rows])
        return rows[first], rows[second], label

    valid = np.flatnonzero(data["role"] == "valid")
    table = pd.DataFrame({"writer": data["writer"][valid], "genuine": data["genuine"][valid], "path": valid})
    head_pairs = make_pairs(table, protocol="balanced", forgeries="both", n_per_writer=40, random_state=seed)
    ha, hb = head_pairs["reference"].to_numpy(int), head_pairs["questioned"].to_numpy(int)
    va, vb, vlabel = exhaustive("valid")
    ta, tb, tlabel = exhaustive("test")
    out = []
    for rule in ("distance", "head") + (("head_ink",) if ink is not None else ()):
        if rule == "distance":
            def score(a, b):
                return -np.linalg.norm(E[a] - E[b], axis=1)
        else:
            model = LogisticRegression(max_iter=1000, random_state=seed).fit(inputs(ha, hb, rule), head_pairs["label"])

            def score(a, b, model=model, rule=rule):
                return model.decision_function(inputs(a, b, rule))
        chosen = equal_error_rate(vlabel, score(va, vb))[1]
        scores = score(ta, tb)
        for dataset in np.unique(data["dataset"][ta]):
            mask = data["dataset"][ta] == dataset
            s, y = scores[mask], tlabel[mask]
            eer, oracle = equal_error_rate(y, s)
            out.append({"test": dataset, "rule": rule, "EER": eer,
                        "EER_writer": per_writer_eer(y, s, data["writer"][ta][mask]),
                        "acc": float(np.mean((s >= chosen) == (y == 1))),
                        "acc_oracle": float(np.mean((s >= oracle) == (y == 1)))})
    return out


def load(path, whitening=None):
    """A ``--save-embeddings`` file as a dict of arrays; with ``whitening``, its embeddings whitened and re-normalised."""
    data = dict(np.load(path, allow_pickle=False))
    if whitening:
        own = (data["role"] == "train") & data["genuine"]
        E = torch.as_tensor(data["embeddings"])
        W = within_writer_whitening(E[own], torch.as_tensor(pd.factorize(data["writer"][own])[0]), whitening)
        data["embeddings"] = torch.nn.functional.normalize(E @ W, dim=1).numpy()
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--k", type=int, default=5, help="references per writer")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the references per file")
    parser.add_argument("--top", type=int, default=100, help="closest cohort signatures used by s-norm")
    parser.add_argument("--cohort", type=int, default=1000, help="training signatures in the cohort")
    parser.add_argument("--whitening", type=float, help="whiten the embeddings first, with this shrinkage")
    args = parser.parse_args()
    rows = []
    for path in args.files:
        data = load(path, args.whitening)
        for draw in range(args.draws):
            rng = np.random.RandomState(draw)
            valid = score_role(data, "valid", args.k, rng, args.top, args.cohort)
            test = score_role(data, "test", args.k, rng, args.top, args.cohort)
            if "ink" in data:
                test, valid = add_ratio_ink(test, valid)
            rows += [{"file": path, "draw": draw, **r} for r in evaluate(test, valid)]
    frame = pd.DataFrame(rows)
    per_file = frame.groupby(["test", "rule", "file"])[["EER", "acc", "acc_oracle"]].mean()
    summary = per_file.groupby(["test", "rule"]).agg(["mean", "std"]) * 100
    print(f"k={args.k}, {len(args.files)} files x {args.draws} reference draws; % (mean and sd over files)")
    print(summary.round(1).to_string())
    pairs = pd.DataFrame([{"file": path, **r} for path in args.files
                          for r in pair_rules(load(path, args.whitening))])
    summary = pairs.groupby(["test", "rule"])[["EER", "EER_writer", "acc", "acc_oracle"]].agg(["mean", "std"]) * 100
    print(f"single pairs (k=1), {len(args.files)} files; % (mean and sd over files)")
    print(summary.round(1).to_string())


if __name__ == "__main__":
    main()
