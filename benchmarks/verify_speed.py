"""End-to-end verification throughput of a model on this machine: image paths in, verdicts out.

Five genuine references of one writer are preprocessed once; then ``--n`` questioned images (read from
disk, preprocessed, embedded with the references, each image once, and scored against the five references
by ``sigest.seed_api.vote_rows``'s soft vote, as ``sigest verify`` does) are verified in one call. Prints questioned signatures per second (median of ``--repeats`` runs), with
the preprocessing's share of the time, and the model file's size.

``--voting normalized`` scores with the model's distance-ratio voter instead (``model.reference_voter_``,
its extra views included), through its public ``predict_proba`` on rows (questioned, 5 references)
given as positions in one array holding each image once: the references are preprocessed once and,
within the call, embedded once.

``--rows`` hands the voter's path the rows of file paths themselves, as a scikit-learn user would:
``model[0].transform(rows)`` then ``model.reference_voter_.predict_proba``, the preprocessing
reading each distinct file of the call once; with ``--pool-rows`` that preprocessing returns each
image once and the rows as positions (``PreprocessImage(pool_rows=True)``) instead of rows of images.

``--with-local`` times the normalized voter comparing the local view too, for a model whose voter does not
(``"local_set"`` added to its ``extra_views`` with a zero weight in its calibration: the cost of the view, not
its accuracy).

Usage: python benchmarks/verify_speed.py [DATA_FOLDER] [--model sigest-base] [--n 200] [--jobs 2] [--repeats 7]
       [--voting soft|normalized] [--rows [--pool-rows]] [--autocast bfloat16] [--with-local]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

import sigest
from sigest.datasets import load_signatures
from sigest.pretrained import weights_path
from sigest.seed_api import vote_rows

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cedar"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="sigest-base")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="preprocessing threads (joblib; -1: all cores)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs; the median is printed")
    parser.add_argument("--voting", choices=["soft", "normalized"], default="soft")
    parser.add_argument("--rows", action="store_true", help="normalized voting on rows of paths (questioned, 5 "
                        "references) through the model's preprocessing, no references cached by hand")
    parser.add_argument("--pool-rows", action="store_true", help="with --rows: PreprocessImage(pool_rows=True), "
                        "each distinct image once and the rows as positions instead of rows of images")
    parser.add_argument("--autocast", choices=["bfloat16"], help="the network under torch.autocast in this dtype "
                        "(SiameseEmbedder(autocast=...))")
    parser.add_argument("--with-local", action="store_true", help="normalized voting: the voter compares the local "
                        "view too (zero weight: its cost only)")
    args = parser.parse_args()
    model = sigest.pretrained(args.model) if args.model in sigest.list_pretrained() else sigest.load(args.model)
    preprocess, verifier = model[0].set_params(n_jobs=args.jobs, pool_rows=args.pool_rows), model[-1]
    verifier.embedder_.set_params(autocast=args.autocast)
    table = load_signatures(args.data)
    references = table[table["genuine"]]["path"].tolist()[:5]
    questioned = table["path"].tolist()[5 : 5 + args.n]
    reference_images, reference_ink = preprocess.transform_with_ink(references)
    if args.with_local:
        if args.voting != "normalized":
            parser.error("--with-local times the normalized voter")
        voter = model.reference_voter_
        n_views = 1 + len(voter.extra_views)  # its log ratios come first, then the ink differences
        voter.extra_views = (*voter.extra_views, "local_set")
        voter.calibrator_.coef_ = np.insert(voter.calibrator_.coef_, n_views, 0.0, axis=1)
        voter.calibrator_.n_features_in_ += 1

    def verify_rows():
        started = time.perf_counter()
        rows = np.array([[q, *references] for q in questioned], dtype=object)
        X = preprocess.transform(rows)
        middle = time.perf_counter()
        scores = model.reference_voter_.predict_proba(X)[:, 1]
        return middle - started, time.perf_counter() - started, scores

    def verify():
        started = time.perf_counter()
        images, ink = preprocess.transform_with_ink(questioned)
        middle = time.perf_counter()
        # each image once; row i: (questioned i, the 5 references)
        rows = np.column_stack([np.arange(len(images)), np.tile(len(images) + np.arange(5), (len(images), 1))])
        X = {"images": np.concatenate([images, reference_images]), "ink": np.concatenate([ink, reference_ink]),
             "rows": rows}
        if args.voting == "normalized":
            scores = model.reference_voter_.predict_proba(X)[:, 1]
        else:  # the mean pair probability over the references, as sigest verify computes it
            scores = vote_rows(model, X, voting="soft")[1]
        return middle - started, time.perf_counter() - started, scores

    if args.rows and (args.voting != "normalized" or not preprocess.measure_ink):
        parser.error("--rows measures normalized voting of a model that measures ink (sigest-base does)")
    run = verify_rows if args.rows else verify
    run()  # warm-up
    runs = [run()[:2] for _ in range(args.repeats)]
    pre_s, total_s = np.median([r[0] for r in runs]), np.median([r[1] for r in runs])
    size = (weights_path(args.model) if args.model in sigest.list_pretrained() else Path(args.model)).stat().st_size
    print(f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, preprocessing jobs {args.jobs}, "
          f"input {preprocess.size[0]}x{preprocess.size[1]}, {args.n} questioned vs 5 cached references, "
          f"{args.voting} voting{' with the local view' if args.with_local else ''}{', rows of paths' if args.rows else ''}{' as a pool' if args.pool_rows else ''}"
          f"{', network in ' + args.autocast if args.autocast else ''}")
    print(f"{args.n / total_s:.1f} questioned/s end to end (median of {args.repeats}); preprocessing {100 * pre_s / total_s:.0f} % "
          f"of the time ({args.n / pre_s:.1f} images/s alone); model file {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
