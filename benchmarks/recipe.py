"""Writer-independent benchmark of a training recipe on a preprocessed cache of the real data sets.

Builds the cache once (``sigest prepare`` or :func:`sigest.cache.prepare_cache`), then, for each
seed and writer fold: holds out the fold's test writers of every data set, keeps validation writers
for checkpoint selection (EER each epoch) and for the decision threshold, trains a
:class:`~sigest.SiameseEmbedder` on the rest, and measures every test data set on its own:

- EER with one global threshold (the number papers print) and with per-writer thresholds, AUC,
  on every genuine/genuine and genuine/skilled pair of each test writer (embedding distance);
- with k=5 references per writer, the questioned signature's mean distance to them, raw and
  normalised by the references' own mutual distance, and (with a cache that holds ink measures)
  the normalised score combined with the ink difference by a logistic regression fitted on the
  validation writers (``VotingVerifier(compare_ink=True)``): EER, and FRR / FAR skilled /
  FAR random / accuracy at the threshold chosen on the validation writers (the honest number)
  beside the accuracy at the test-oracle EER threshold.

Usage::

    python benchmarks/recipe.py CACHE.npz --folds 0 1 2 --seeds 0 1 --backbone resnet18 --augment
    python benchmarks/recipe.py CACHE.npz --train-datasets cedar sigcomp2011-dutch --test-datasets bhsig260-bengali
    python benchmarks/recipe.py CACHE.npz --n-folds 11 --folds 0 1 2 3 4 5 6 7 8 9 10   # 5 CEDAR test writers a fold

``--n-folds 11`` is CEDAR's usual writer-independent protocol (MS-SigNet: 11 folds of 5 test writers, 50
writers left for training and validation); every fold also holds 4-5 Bengali and 3-4 Dutch writers.

Prints one line per (run, test data set) and, with ``--out``, writes them as CSV.
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from skorch.callbacks import Callback, EarlyStopping, LRScheduler
from torch.optim.lr_scheduler import LambdaLR

from sigest.cache import cache_images, load_cache
from sigest.callbacks import WeightAverage, WriterEER
from sigest.embedder import SiameseEmbedder, embedding_targets
from sigest.metrics import equal_error_rate, far_frr, per_writer_eer, roc_auc, within_writer_pairs
from sigest.nn import InkJitter, ProxyAnchorLoss, SignatureAugment
from sigest.verification import ink_difference

from scoring import add_ratio_ink  # benchmarks/scoring.py, beside this script


def writer_folds(table, n_folds, seed=12345):
    """Fold number of each writer, drawn per data set so each fold holds writers of every set."""
    fold = {}
    rng = np.random.RandomState(seed)
    for _, group in table.groupby("dataset"):
        writers = np.array(sorted(group["writer"].unique()))
        for i, w in enumerate(rng.permutation(writers)):
            fold[w] = i % n_folds
    return fold


def split(table, args, fold, seed):
    """(train, valid, test) tables for one fold."""
    if args.test_datasets:
        test = table[table["dataset"].isin(args.test_datasets)]
        rest = table[table["dataset"].isin(args.train_datasets or sorted(set(table["dataset"]) - set(args.test_datasets)))]
    else:
        folds = writer_folds(table, args.n_folds)
        in_test = table["writer"].map(folds) == fold
        test, rest = table[in_test], table[~in_test]
    rng = np.random.RandomState(1000 + seed)
    valid_writers = []
    for _, group in rest.groupby("dataset"):
        writers = np.array(sorted(group["writer"].unique()))
        valid_writers += list(rng.choice(writers, size=max(2, round(args.valid_share * len(writers))), replace=False))
    if args.train_datasets and not args.test_datasets:
        # the same test folds and validation writers as a run on every set, trained and validated on these sets only
        rest = rest[rest["dataset"].isin(args.train_datasets)]
    in_valid = rest["writer"].isin(valid_writers)
    return rest[~in_valid], rest[in_valid], test


def reference_scores(E, table, k, rng, ink=None):
    """Per questioned signature: mean distance to k references, that distance over the refs' spread, and
    (with ``ink``, the cache's ink measures) the ink differences of :func:`sigest.verification.ink_difference`."""
    rows = []
    for writer, group in table.groupby("writer"):
        genuine = group.loc[group["genuine"], "row"].to_numpy()
        if len(genuine) <= k:
            continue
        genuine = rng.permutation(genuine)
        refs, others = genuine[:k], genuine[k:]
        spread = np.mean([np.linalg.norm(E[a] - E[b]) for i, a in enumerate(refs) for b in refs[i + 1:]])
        skilled = group.loc[~group["genuine"], "row"].to_numpy()
        random_pool = table.loc[(table["writer"] != writer) & table["genuine"], "row"].to_numpy()
        randoms = rng.choice(random_pool, size=min(len(others), len(random_pool)), replace=False)
        for kind, items in (("genuine", others), ("skilled", skilled), ("random", randoms)):
            for q in items:
                d = float(np.linalg.norm(E[refs] - E[q], axis=1).mean())
                ink_diff = np.nan if ink is None else ink_difference([[ink[q], *ink[refs]]])[0]
                rows.append((writer, kind, -d, -d / spread, ink_diff))
    return pd.DataFrame(rows, columns=["writer", "kind", "raw", "normalised", "ink_diff"])


def threshold_report(scores, kinds, threshold):
    genuine, skilled, random = (scores[kinds == k] for k in ("genuine", "skilled", "random"))
    far_s, frr = far_frr(genuine, skilled, threshold)
    far_r, _ = far_frr(genuine, random, threshold)
    mask = kinds != "random"
    acc = float(np.mean((scores[mask] >= threshold) == (kinds[mask] == "genuine")))
    return frr, far_s, far_r, acc


def measure(E, test, valid_votes, rng, k, ink=None):
    """Metrics of one test data set; with ``ink``, also the ratio combined with the ink differences."""
    first, second, label = within_writer_pairs(test["writer"].to_numpy(), test["genuine"].to_numpy())
    rows = test["row"].to_numpy()
    score = -np.linalg.norm(E[rows[first]] - E[rows[second]], axis=1)
    out = {
        "EER": equal_error_rate(label, score)[0],
        "EER_writer": per_writer_eer(label, score, test["writer"].to_numpy()[first]),
        "AUC": roc_auc(label, score),
    }
    votes = reference_scores(E, test, k, rng, ink)
    columns = ("raw", "normalised")
    if ink is not None:
        votes, valid_votes = add_ratio_ink(votes, valid_votes, ratio="normalised", out="normalised_ink")
        columns = (*columns, "normalised_ink")
    kinds = votes["kind"].to_numpy()
    for column in columns:
        skilled = kinds != "random"
        eer, oracle = equal_error_rate(kinds[skilled] == "genuine", votes[column].to_numpy()[skilled])
        vkinds = valid_votes["kind"].to_numpy()
        vmask = vkinds != "random"
        chosen = equal_error_rate(vkinds[vmask] == "genuine", valid_votes[column].to_numpy()[vmask])[1]
        frr, far_s, far_r, acc = threshold_report(votes[column].to_numpy(), kinds, chosen)
        out.update({f"k{k}_{column}_EER": eer, f"k{k}_{column}_FRR": frr, f"k{k}_{column}_FAR_skilled": far_s,
                    f"k{k}_{column}_FAR_random": far_r, f"k{k}_{column}_acc": acc,
                    f"k{k}_{column}_acc_oracle": threshold_report(votes[column].to_numpy(), kinds, oracle)[3]})
    return out


class GradientNorm(Callback):
    """Record the largest gradient norm of the epoch's training batches as ``grad_max``."""

    def on_epoch_begin(self, net, **kwargs):
        self.largest_ = 0.0

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        norms = [p.grad.detach().norm() for _, p in named_parameters if p.grad is not None]
        if norms:
            self.largest_ = max(self.largest_, float(torch.stack(norms).norm()))

    def on_epoch_end(self, net, **kwargs):
        net.history.record("grad_max", self.largest_)


class EpochWeights(Callback):
    """Keep a CPU copy of the network's weights (parameters and buffers) after every epoch, in ``weights_``."""

    def on_train_begin(self, net, **kwargs):
        self.weights_ = []

    def on_epoch_end(self, net, **kwargs):
        self.weights_.append({k: v.detach().cpu().clone() for k, v in net.module_.state_dict().items()})


class TimeLimit(Callback):
    """End training (as if interrupted) after the epoch that passes ``seconds`` of wall time.

    skorch then runs ``on_train_end`` as usual, so ``EarlyStopping(load_best=True)`` still restores
    the best epoch so far. For runs that must finish inside a fixed budget (a lent GPU).
    """

    def __init__(self, seconds):
        self.seconds = seconds

    def on_train_begin(self, net, **kwargs):
        self.start_ = time.perf_counter()

    def on_epoch_end(self, net, **kwargs):
        if time.perf_counter() - self.start_ > self.seconds:
            raise KeyboardInterrupt


def resize(images, size):
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(torch.from_numpy(images), size=size, mode="bilinear", antialias=True).numpy()


def augmentation(args):
    """The training augmentation the arguments ask for: SignatureAugment, InkJitter, or None (one at a time).
    --elastic alone warps without SignatureAugment's affine distortions and wider pens; with --augment, beside them."""
    if (args.augment or args.elastic) and args.ink_jitter:
        raise SystemExit("--augment or --elastic, and --ink-jitter: one at a time")
    if args.elastic and not args.augment:
        return SignatureAugment(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.0, stroke=0.0,
                                p=args.augment_p, elastic=args.elastic)
    if args.ink_jitter:
        return InkJitter(factor=tuple(args.ink_jitter), p=args.ink_jitter_p)
    return SignatureAugment(p=args.augment_p, elastic=args.elastic) if args.augment else None


def run(cache, args, fold, seed):
    """Train one fold and seed: (what training did: epochs, best epoch, validation EER, seconds, images/s; one row
    of figures per test data set, empty with --folds -1)."""
    table = cache.table.rename(columns={"index": "row"})
    train, valid, test = split(table, args, fold, seed)
    images = resize(cache_images(cache), tuple(args.size))
    callbacks = [WeightAverage(args.ema)] if args.ema else []
    callbacks.append(GradientNorm())
    callbacks.append(WriterEER(images[valid["row"].to_numpy()], valid["writer"].to_numpy(),
                               valid["genuine"].to_numpy()))
    if args.save_checkpoints:  # before early stopping, which ends training at the end of its epoch
        callbacks.append(EpochWeights())
    callbacks.append(EarlyStopping(monitor="valid_eer", patience=args.patience, load_best=True, sink=lambda *a: None))
    if args.warmup:
        if args.cosine:
            raise SystemExit("--warmup and --cosine are not combined")
        callbacks.append(LRScheduler(policy=LambdaLR, lr_lambda=lambda epoch: min(1.0, (epoch + 1) / args.warmup)))
    if args.cosine:
        callbacks.append(LRScheduler(policy="CosineAnnealingLR", T_max=args.epochs))
    if args.time_limit:
        callbacks.append(TimeLimit(args.time_limit))
    if args.loss == "proxy_anchor":
        loss = {"criterion": ProxyAnchorLoss, "criterion__num_writers": train["writer"].nunique(),
                "criterion__embedding_dim": args.dim, "optimizer__param_groups": [("*proxies", {"lr": 100 * args.lr})]}
    elif args.loss == "arcface":
        loss = {"criterion": "arcface", "criterion__num_writers": train["writer"].nunique(),
                "criterion__embedding_dim": args.dim, "criterion__scale": args.scale,
                "optimizer__param_groups": [("*loss.W", {"lr": 10 * args.lr})]}
    elif args.loss == "supcon":
        loss = {"criterion": "supcon", "criterion__temperature": args.temperature}
    else:
        loss = {"criterion__margin": args.margin, "criterion__mining": args.mining, "criterion__smooth": args.smooth,
                "criterion__distance": args.triplet_distance}
    net = SiameseEmbedder(
        module__backbone=args.backbone, module__embedding_dim=args.dim, module__attention_stages=tuple(args.attention),
        module__dropout=args.dropout, **loss, lr=args.lr, max_epochs=args.epochs,
        writers_per_batch=args.p, samples_per_writer=args.k_per_writer, forgeries_per_writer=args.forgeries_per_writer,
        batch_size=256,
        augment=augmentation(args), callbacks=callbacks, random_state=seed,
        iterator_train__num_workers=args.workers, iterator_train__pin_memory=torch.cuda.is_available(),
        optimizer__weight_decay=args.weight_decay, device=args.device, autocast=args.autocast,
        local_weight=args.local_weight, local_margin=args.local_margin,
    )
    seen_writers = set(train["writer"])  # every writer whose images the saved weights were trained on
    if args.init:  # start from a saved run's weights (pre-training or fine-tuning), not from random ones
        start_run = torch.load(args.init.format(fold=fold, seed=seed), map_location="cpu", weights_only=False)
        leaked = set(start_run.get("train_writers", ())) & set(test["writer"])
        if leaked:
            raise SystemExit(f"--init trained on {len(leaked)} of this fold's test writers, e.g. {sorted(leaked)[0]}")
        seen_writers |= set(start_run.get("train_writers", ()))
        net.set_params(warm_start=True).initialize()
        net.module_.load_state_dict(start_run["state_dict"])
    start = time.perf_counter()
    net.fit(images[train["row"].to_numpy()], embedding_targets(train["writer"], train["genuine"]))
    seconds = time.perf_counter() - start
    per_writer = args.k_per_writer + (args.k_per_writer // 2 if args.forgeries_per_writer is None
                                      else args.forgeries_per_writer)
    seen = int(sum(len(e["batches"]) for e in net.history) * args.p * per_writer)
    best = int(np.nanargmin(net.history[:, "valid_eer"])) + 1
    E = np.zeros((len(table), args.dim), np.float32)
    wanted = np.concatenate([valid["row"].to_numpy(), test["row"].to_numpy()])
    if args.save_embeddings:
        wanted = np.concatenate([wanted, train["row"].to_numpy()])
    E[wanted] = net.transform(images[wanted])
    if args.save_embeddings:
        role = np.full(len(table), "", dtype=object)
        for name, part in (("train", train), ("valid", valid), ("test", test)):
            role[part["row"].to_numpy()] = name
        np.savez_compressed(args.save_embeddings.format(fold=fold, seed=seed), embeddings=E,
                            writer=table["writer"].to_numpy().astype(str), genuine=table["genuine"].to_numpy(),
                            dataset=table["dataset"].to_numpy().astype(str), role=role.astype(str),
                            **({} if cache.ink is None else {"ink": cache.ink}))
    rng = np.random.RandomState(seed)
    valid_votes = reference_scores(E, valid, args.k, rng, cache.ink)
    if args.save:
        torch.save({"state_dict": {k: v.cpu() for k, v in net.module_.state_dict().items()}, "args": vars(args),
                    "train_writers": sorted(seen_writers), "valid_writers": sorted(valid["writer"].unique()),
                    "history": [{k: v for k, v in e.items() if k != "batches"} for e in net.history]},
                   args.save.format(fold=fold, seed=seed))
    if args.save_checkpoints:
        epochs = next(c for c in callbacks if isinstance(c, EpochWeights)).weights_
        torch.save({"epochs": epochs, "valid_eer": list(net.history[:, "valid_eer"]),
                    "grad_max": list(net.history[:, "grad_max"]), "train_loss": list(net.history[:, "train_loss"]),
                    "train_rows": train["row"].to_numpy(), "valid_rows": valid["row"].to_numpy(),
                    "test_rows": test["row"].to_numpy(), "args": vars(args)},
                   args.save_checkpoints.format(fold=fold, seed=seed))
    trained = {"epochs": len(net.history), "best_epoch": best, "valid_eer": float(np.nanmin(net.history[:, "valid_eer"])),
               "train_s": seconds, "time_limited": bool(net.interrupted_), "images_per_s": seen / seconds}
    results = []
    for dataset, group in test.groupby("dataset"):
        m = measure(E, group, valid_votes, rng, args.k, cache.ink)
        results.append({"fold": fold, "seed": seed, "test": dataset, "n_train_writers": train["writer"].nunique(),
                        "n_test_writers": group["writer"].nunique(), **trained, **m})
    return trained, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="-1: no test writers (train on all)")
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-datasets", nargs="+", help="train and validate on these data sets only (with "
                        "--test-datasets: test on those; without: on every set's fold writers)")
    parser.add_argument("--test-datasets", nargs="+")
    parser.add_argument("--valid-share", type=float, default=0.12)
    parser.add_argument("--size", type=int, nargs=2, default=(150, 220))
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--attention", type=int, nargs="*", default=[3, 4])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument("--cosine", action="store_true")
    parser.add_argument("--warmup", type=int, default=0, help="epochs of linear learning-rate warm-up (lr/N, 2lr/N, ...)")
    parser.add_argument("--ema", type=float, default=0.0, help="judge and keep an EMA of the weights with this decay")
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--augment-p", type=float, default=1.0, help="share of training images distorted")
    parser.add_argument("--elastic", type=float, default=0.0,
                        help="SignatureAugment's elastic warp, largest displacement as a fraction of the height")
    parser.add_argument("--ink-jitter", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="multiply the ink intensity of training images by a factor in [LOW, HIGH] (InkJitter)")
    parser.add_argument("--ink-jitter-p", type=float, default=0.5, help="share of training images --ink-jitter changes")
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--mining", default="batch_hard")
    parser.add_argument("--smooth", action="store_true", help="soft-margin triplet loss (softplus, not hinge)")
    parser.add_argument("--triplet-distance", choices=["euclidean", "cosine", "log_euclidean"], default="euclidean",
                        help="the triplet loss's distance; log_euclidean: a margin on the ratio d(a, p) / d(a, n)")
    parser.add_argument("--local-weight", type=float, default=0.0,
                        help="weight of LocalMatchTripletLoss on the local descriptors (SiameseEmbedder local_weight)")
    parser.add_argument("--local-margin", type=float, default=0.1, help="its margin on the log distance ratio")
    parser.add_argument("--loss", choices=["triplet", "supcon", "proxy_anchor", "arcface"], default="triplet")
    parser.add_argument("--scale", type=float, default=30.0, help="ArcFace's scale of the cosines")
    parser.add_argument("--temperature", type=float, default=0.1, help="supcon's softmax temperature")
    parser.add_argument("--p", type=int, default=32)
    parser.add_argument("--k-per-writer", type=int, default=8)
    parser.add_argument("--forgeries-per-writer", type=int, help="skilled forgeries per writer a batch (default K // 2)")
    parser.add_argument("--k", type=int, default=5, help="references per writer")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--autocast", choices=["bfloat16"], help="forward passes under torch.autocast in this dtype")
    parser.add_argument("--time-limit", type=float, help="end training after the epoch that passes this many seconds")
    parser.add_argument("--init", metavar="RUN.pt",
                        help="start from the weights of a run saved with --save (same backbone, dim and attention; "
                             "{fold} and {seed} in the name are filled in), e.g. one pre-trained on synthetic writers "
                             "with --folds -1, or the same fold's run on every set to fine-tune with --train-datasets")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out")
    parser.add_argument("--save", help="write the trained network's weights and the run's settings (torch.save); "
                                       "{fold} and {seed} in the name are filled in")
    parser.add_argument("--save-embeddings", metavar="FILE.npz",
                        help="write every image's embedding, writer, data set and role (train/valid/test) for "
                             "benchmarks/scoring.py; {fold} and {seed} in the name are filled in")
    parser.add_argument("--save-checkpoints", metavar="FILE.pt",
                        help="write every epoch's weights, the validation EER of each and the run's rows "
                             "(torch.save), to compare checkpoint choices afterwards; {fold} and {seed} are filled in")
    args = parser.parse_args()
    cache = load_cache(args.cache)
    rows = []
    for fold in args.folds:
        for seed in args.seeds:
            trained, results = run(cache, args, fold, seed)
            if not results:  # --folds -1: trained on every writer, nothing to test
                print(f"{args.tag} fold {fold} seed {seed}: no test writers | best ep {trained['best_epoch']}/"
                      f"{trained['epochs']} validation EER {100 * trained['valid_eer']:5.2f} | {trained['train_s']:.0f}s "
                      f"{trained['images_per_s']:.0f} img/s", flush=True)
            for r in results:
                r["tag"] = args.tag
                rows.append(r)
                print(f"{args.tag} fold {fold} seed {seed} {r['test']:18s} EER {100 * r['EER']:5.2f} "
                      f"writerEER {100 * r['EER_writer']:5.2f} AUC {r['AUC']:.3f} | k{args.k} raw EER "
                      f"{100 * r[f'k{args.k}_raw_EER']:5.2f} acc {100 * r[f'k{args.k}_raw_acc']:5.2f}/"
                      f"{100 * r[f'k{args.k}_raw_acc_oracle']:5.2f} | norm EER {100 * r[f'k{args.k}_normalised_EER']:5.2f} "
                      f"acc {100 * r[f'k{args.k}_normalised_acc']:5.2f}/{100 * r[f'k{args.k}_normalised_acc_oracle']:5.2f}"
                      + (f" | +ink EER {100 * r[f'k{args.k}_normalised_ink_EER']:5.2f} acc "
                         f"{100 * r[f'k{args.k}_normalised_ink_acc']:5.2f}/{100 * r[f'k{args.k}_normalised_ink_acc_oracle']:5.2f}"
                         if f"k{args.k}_normalised_ink_EER" in r else "")
                      + f" | best ep {r['best_epoch']}/{r['epochs']} {r['train_s']:.0f}s {r['images_per_s']:.0f} img/s",
                      flush=True)
    if not rows:  # --folds -1: trained on every writer, nothing to test
        return
    frame = pd.DataFrame(rows)
    columns = [c for c in ("EER", "EER_writer", "AUC", *(f"k{args.k}_{v}_{m}" for m in ("EER", "acc")
                                                            for v in ("raw", "normalised", "normalised_ink")))
               if c in frame.columns]
    summary = frame.groupby("test")[columns].agg(["mean", "std"])
    print(args.tag, "mean/std over runs\n", (summary * 1).round(4).to_string())
    if args.out:
        frame.to_csv(args.out, mode="a", header=not __import__("os").path.exists(args.out), index=False)


if __name__ == "__main__":
    main()
