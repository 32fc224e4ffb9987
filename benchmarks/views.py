"""Do more views of the same network help the verifier? Measured on recipe.py's saved training runs.

Reads the files ``benchmarks/recipe.py --save-checkpoints`` writes and takes each run's own checkpoint
(the epoch of lowest validation-writer EER), or the files ``--save`` writes (that checkpoint alone;
writers neither trained on nor validated on are the run's test writers). Besides the network's embedding (``global``), two
more views of every image are read off the same forward pass, with no training:

- ``stage3``: the stage-3 feature map, average-pooled and normalised (C3 values);
- ``strips``: the last feature map average-pooled over 4 vertical strips (left to right), each
  through the embedding's own projection and normalised: 4 local embeddings per image;
- ``texture``: each channel's standard deviation over the positions of the second stage's map (C2 values);
- ``local``: the same map's positions as a grid of local descriptors, compared by
  :func:`sigest.nn.local_match_distance`; ``local_set``: the same grids, the questioned image matched in
  the k references together (:func:`sigest.verification.local_set_distance_ratio`).

All are :meth:`sigest.nn.SiameseResNet.views`, whitened as the library whitens them
(:func:`sigest.training.fit_whitening`, shrinkage 0.1, fitted on the training writers' genuine
signatures; one matrix per strip).

For k=5 references, each view gives a distance ratio (scoring.py's ``ratio``; the strips' log
ratios are averaged into one input); a logistic regression fitted on the validation writers'
genuine and skilled rows combines the log ratios with the ink differences, as the library's
voter combines the global ratio and ink (``VotingVerifier(voting="normalized", compare_ink=True)``).
For single pairs, the same with minus the views' distances; and the library's own pair head
(rule ``pair head``), fitted by :func:`sigest.training.fit_pair_head` on the validation writers (with
ink), with the embedding alone (set ``global``), with the texture distance (``global + texture``,
what ``sigest train`` ships) and with the local match distance too (``global + texture + local``,
what ``sigest train --local-view`` ships). Per feature set and test data set: EER on genuine vs skilled forgeries
(global threshold), and accuracy at the validation writers' EER threshold beside the test oracle's; at that
threshold, FRR and FAR of skilled forgeries (and of random ones, for k references).
Means and sd over runs.

``--local-pooling 2`` pools the local grids 2 x 2 before they are matched, as ``sigest-base-fast`` does
(``VotingVerifier(local_pooling=2)``, the pair head's too).

Usage: python benchmarks/views.py CACHE.npz RUNS.pt [...] [--k 5] [--draws 5] [--out RUNS.csv] [--device cuda]
       [--references-only] [--local-pooling N]
"""

import argparse

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from sigest.cache import cache_images, load_cache
from sigest.metrics import equal_error_rate, far_frr, within_writer_pairs
from sigest.embedder import SiameseEmbedder
from sigest.nn import SiameseResNet, pool_local_descriptors, pooled_reach
from sigest.training import fit_pair_head, fit_whitening
from sigest.verification import (LOCAL_REACH, VotingVerifier, ink_difference, local_distance_ratio,
                                 local_pair_distances, local_set_distance_ratio)

from scoring import accuracy, score_role  # benchmarks/scoring.py, beside this script

FEATURE_SETS = {
    "global": ["global"],
    "global + stage3": ["global", "stage3"],
    "global + strips": ["global", "strips"],
    "global + strips + stage3": ["global", "strips", "stage3"],
    "global + strips + stage3 + texture": ["global", "strips", "stage3", "texture"],
    "global + strips + stage3 + texture + local": ["global", "strips", "stage3", "texture", "local"],
    "global + strips + stage3 + texture + local_set": ["global", "strips", "stage3", "texture", "local_set"],
    "local": ["local"],
    "local_set": ["local_set"],
}
PAIR_SETS = {"global": ["global"], "global + stage3": ["global", "stage3"], "global + texture": ["global", "texture"],
             "global + texture + local": ["global", "texture", "local"]}
STRIPS = SiameseResNet.n_strips


def whitened_views(settings, weights, images, own, writers, device="cpu"):
    """The whitened network (:func:`sigest.training.fit_whitening`, shrinkage 0.1, on the rows ``own``) and every
    view of every image: {"global": (N, d), "stage3": (N, C3), "texture": (N, C2), "strip0".."strip3": (N, d)}."""
    net = SiameseEmbedder(module__backbone=settings["backbone"], module__embedding_dim=settings["dim"],
                          module__attention_stages=tuple(settings["attention"]), device=device).initialize()
    net.module_.load_state_dict(weights)
    net = fit_whitening(net, images, writers, rows=np.flatnonzero(own), shrinkage=0.1)
    views = net.transform_views(images)
    return net, {"global": views["embedding"], "stage3": views["penultimate"], "texture": views["texture"],
                 "local": views["local"], **{f"strip{i}": views["strips"][:, i] for i in range(STRIPS)}}


def view_columns(name, score):
    """The input column(s) of one view: ``score(view_name)`` for a view, the mean over the strips for ``strips``."""
    if name == "strips":
        return np.mean([score(f"strip{i}") for i in range(STRIPS)], axis=0)
    return score(name)


def reference_rows(E, base, k, draw, reach=LOCAL_REACH):
    """k-reference rows of the validation and test writers, with each view's log distance ratio as a column (the
    local grids matched within ``reach``)."""
    tables = {}
    for role in ("valid", "test"):
        per_view = {name: score_role({**base, "embeddings": V}, role, k, np.random.RandomState(draw), 100, 1000,
                                     rules=("ratio",)) for name, V in E.items() if name != "local"}
        table = per_view["global"]
        tables[role] = table.assign(**{f"log_{n}": np.log(-t["ratio"].to_numpy()) for n, t in per_view.items()})
        if "local" in E:  # the same rows' images, compared by local_match_distance as the voter compares them
            position = np.column_stack([table["questioned"], np.stack(table["references"].to_numpy())])
            tables[role]["log_local"] = np.log(local_distance_ratio(E["local"], position, reach))
            tables[role]["log_local_set"] = np.log(local_set_distance_ratio(E["local"], position, reach))
    return tables["valid"], tables["test"]


def rates_at(scores, kinds, threshold):
    """FRR and FAR (skilled, random forgeries) at ``threshold`` of scores whose ``kinds`` are genuine / skilled /
    random: a dict (NaN for a kind that is absent)."""
    far_skilled, frr = far_frr(scores[kinds == "genuine"], scores[kinds == "skilled"], threshold)
    far_random = far_frr(scores[:0], scores[kinds == "random"], threshold)[0]
    return {"FRR": frr, "FAR_skilled": far_skilled, "FAR_random": far_random}


def k_reference_results(E, base, k, draw, reach=LOCAL_REACH):
    valid, test = reference_rows(E, base, k, draw, reach)
    out = []
    for set_name, views in FEATURE_SETS.items():
        def features(table, views=views):
            logs = [view_columns(v, lambda n: table[f"log_{n}"].to_numpy()) for v in views]
            return np.column_stack(logs + [np.stack(table["ink_diff"].to_numpy())])

        vmask = valid["kind"].to_numpy() != "random"
        model = LogisticRegression(C=VotingVerifier(None).C, max_iter=1000).fit(
            features(valid)[vmask], valid["kind"].to_numpy()[vmask] == "genuine")
        vscores, scores = model.decision_function(features(valid)), model.decision_function(features(test))
        chosen = equal_error_rate(valid["kind"].to_numpy()[vmask] == "genuine", vscores[vmask])[1]
        for dataset, rows in test.groupby("dataset").indices.items():
            kinds = test["kind"].to_numpy()[rows]
            mask = kinds != "random"
            eer, oracle = equal_error_rate(kinds[mask] == "genuine", scores[rows][mask])
            out.append({"rule": f"k={k}", "set": set_name, "test": dataset, "EER": eer,
                        "acc": accuracy(scores[rows], kinds, chosen), "acc_oracle": accuracy(scores[rows], kinds, oracle),
                        **rates_at(scores[rows], kinds, chosen)})
    return out


def pair_distance(E, name, a, b, reach=LOCAL_REACH):
    """Each pair's distance in one view: (n_pairs,) for the images a[i], b[i]; the local view's by
    :func:`sigest.verification.local_pair_distances` within ``reach``, the others' Euclidean."""
    if name == "local":
        return local_pair_distances(E["local"], a, b, reach)
    return np.linalg.norm(E[name][a] - E[name][b], axis=1)


def pair_results(E, base, reach=LOCAL_REACH):
    """Single pairs: logistic on minus each view's distance and the ink differences (validation writers' pairs);
    the rows of ``pair_head_results`` are added by the caller."""
    def exhaustive(role):
        rows = np.flatnonzero(base["role"] == role)
        first, second, label = within_writer_pairs(base["writer"][rows], base["genuine"][rows])
        return rows[first], rows[second], label

    (va, vb, vy), (ta, tb, ty) = exhaustive("valid"), exhaustive("test")
    out = []
    for set_name, views in PAIR_SETS.items():
        def features(a, b, views=views):
            distances = [view_columns(v, lambda n: -pair_distance(E, n, a, b, reach)) for v in views]
            return np.column_stack(distances + [ink_difference(np.stack([base["ink"][a], base["ink"][b]], axis=1))])

        model = LogisticRegression(C=VotingVerifier(None).C, max_iter=1000).fit(features(va, vb), vy)
        chosen = equal_error_rate(vy, model.decision_function(features(va, vb)))[1]
        scores = model.decision_function(features(ta, tb))
        for dataset in np.unique(base["dataset"][ta]):
            mask = base["dataset"][ta] == dataset
            s, y = scores[mask], ty[mask]
            eer, oracle = equal_error_rate(y, s)
            out.append({"rule": "single pair", "set": set_name, "test": dataset, "EER": eer,
                        "acc": float(np.mean((s >= chosen) == (y == 1))), "acc_oracle": float(np.mean((s >= oracle) == (y == 1)))})
    return out


def pair_head_results(net, images, table, base, local_pooling=1):
    """Single pairs scored by the library's pair head (:func:`sigest.training.fit_pair_head`, with ink), without and
    with the texture distance, and with the local one too (its grids pooled by ``local_pooling``): EER and accuracy
    at its own threshold (chosen on the validation writers)."""
    frame = table.rename(columns={"index": "_row"})
    rows = np.flatnonzero(base["role"] == "test")
    first, second, label = within_writer_pairs(base["writer"][rows], base["genuine"][rows])
    a, b = rows[first], rows[second]
    out = []
    for set_name, extra in (("global", ()), ("global + texture", ("texture",)),
                            ("global + texture + local", ("texture", "local"))):
        head = fit_pair_head(net, frame[base["role"] == "valid"], images, ink=base["ink"], extra_views=extra,
                             local_pooling=local_pooling)
        used = np.unique(np.r_[a, b])
        proba = head.proba_at(head.head_views(images[used]), np.searchsorted(used, np.column_stack([a, b])),
                              ink=base["ink"][np.column_stack([a, b])])
        for dataset in np.unique(base["dataset"][a]):
            mask = base["dataset"][a] == dataset
            s, y = proba[mask], label[mask]
            eer, oracle = equal_error_rate(y, s)
            out.append({"rule": "pair head", "set": set_name, "test": dataset, "EER": eer,
                        "acc": float(np.mean((s >= head.threshold) == (y == 1))),
                        "acc_oracle": float(np.mean((s >= oracle) == (y == 1))),
                        **rates_at(s, np.where(y == 1, "genuine", "skilled"), head.threshold)})
    return out


def load_run(path, table):
    """(role of every cache row, recipe settings, chosen weights, "epoch E of N") of one saved run."""
    run = torch.load(path, map_location="cpu", weights_only=False)
    role = np.full(len(table), "", dtype=object)
    if "epochs" in run:  # --save-checkpoints: every epoch
        for name in ("train", "valid", "test"):
            role[run[f"{name}_rows"]] = name
        best = int(np.argmin(run["valid_eer"]))
        return role.astype(str), run["args"], run["epochs"][best], f"epoch {best + 1} of {len(run['valid_eer'])}"
    writers = table["writer"].to_numpy().astype(str)  # --save: the chosen epoch only
    role[:] = "test"
    role[np.isin(writers, run["train_writers"])] = "train"
    role[np.isin(writers, run["valid_writers"])] = "valid"
    best = int(np.argmin([e["valid_eer"] for e in run["history"]]))
    return role.astype(str), run["args"], run["state_dict"], f"epoch {best + 1} of {len(run['history'])}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("checkpoints", nargs="+", help="files of recipe.py --save-checkpoints or --save")
    parser.add_argument("--k", type=int, default=5, help="references per writer")
    parser.add_argument("--draws", type=int, default=5, help="random draws of the references per run")
    parser.add_argument("--out", help="write every run's figures (means over its draws) to this CSV file")
    parser.add_argument("--device", default="cpu", help="where the network embeds the images (cpu, cuda)")
    parser.add_argument("--references-only", action="store_true",
                        help="score the k-reference rows only, not single pairs (faster)")
    parser.add_argument("--local-pooling", type=int, default=1, metavar="N",
                        help="pool the local grids N x N before matching them (default %(default)s: as they are)")
    args = parser.parse_args()
    reach = pooled_reach(LOCAL_REACH, args.local_pooling)
    cache = load_cache(args.cache)
    if cache.ink is None:
        parser.error("the cache holds no ink measures (make it with sigest prepare)")
    images, table = cache_images(cache), cache.table
    rows = []
    for path in args.checkpoints:
        role, settings, weights, chosen = load_run(path, table)
        base = {"writer": table["writer"].to_numpy().astype(str), "genuine": table["genuine"].to_numpy(),
                "dataset": table["dataset"].to_numpy().astype(str), "role": role, "ink": cache.ink}
        net, E = whitened_views(settings, weights, images, (base["role"] == "train") & base["genuine"],
                                base["writer"], device=args.device)
        E["local"] = pool_local_descriptors(torch.as_tensor(E["local"]), args.local_pooling).numpy()
        for draw in range(args.draws):
            rows += [{"file": path, **r} for r in k_reference_results(E, base, args.k, draw, reach)]
        if not args.references_only:
            rows += [{"file": path, **r} for r in pair_results(E, base, reach)
                     + pair_head_results(net, images, table, base, args.local_pooling)]
        print(f"{path}: {chosen}", flush=True)
    frame = pd.DataFrame(rows)
    per_run = frame.groupby(["rule", "set", "test", "file"])[["EER", "acc", "acc_oracle", "FRR", "FAR_skilled",
                                                              "FAR_random"]].mean()
    if args.out:
        per_run.to_csv(args.out)
    print(f"{len(args.checkpoints)} runs, {args.draws} reference draws each")
    report(per_run)


def report(per_run):
    """Print the figures of several runs: mean and sd over runs, and each feature set's EER minus the global
    view's, run by run. ``per_run``: EER, acc, acc_oracle, FRR, FAR_skilled, FAR_random (NaN where not measured)
    indexed by (rule, set, test, file), as ``--out`` writes
    them (``pd.read_csv(path, index_col=[0, 1, 2, 3])`` reads such a file back)."""
    summary = per_run.groupby(["rule", "set", "test"]).agg(["mean", "std"]) * 100
    print("% (mean and sd over runs)")
    print(summary.round(1).to_string())
    by_set = per_run["EER"].unstack("set")
    paired = (by_set.sub(by_set["global"], axis=0).drop(columns="global").stack().dropna()
              .groupby(level=["rule", "set", "test"]).agg(["mean", "std"]) * 100)
    print("EER minus the global view's, run by run (percentage points; mean and sd over runs)")
    print(paired.round(2).to_string())


if __name__ == "__main__":
    main()
