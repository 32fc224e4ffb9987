"""Writer-independent benchmark on SigComp2011 Dutch (../shared/data/sigcomp2011-dutch).

Fixed split: test on the 10 writers with the highest ids, train (and validate) on the other 33.
Trains the default configuration, evaluates with the exhaustive pairs and prints EER (global and
per-writer thresholds), AUC, FAR/FRR/accuracy at the validation-chosen threshold and at the
test-oracle EER threshold, voting EER for k = 1/3/5/10, training time and verification speed.

Usage: python benchmarks/sigcomp2011_dutch.py [DATA] [--epochs 20] [--size 96 144] [--device auto]
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from sigest.datasets import load_signatures, split_writers
from sigest.evaluation import evaluate, format_report
from sigest.seed_api import perform_voting
from sigest.training import train_verifier


def test_writers_of(table, n=10):
    """The ``n`` writers with the highest numeric ids."""
    return sorted(table["writer"].unique(), key=int)[-n:]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sigcomp2011-dutch")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 144))
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="report folder")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, CUDA {torch.cuda.is_available()}")
    table = load_signatures(args.data)
    train, test = split_writers(table, test_writers=test_writers_of(table))
    print(f"train+valid writers {train['writer'].nunique()} ({len(train)} images), "
          f"test writers {test['writer'].nunique()} ({len(test)} images): {sorted(test['writer'].unique())}")
    start = time.perf_counter()
    model = train_verifier(train, size=tuple(args.size), backbone=args.backbone, max_epochs=args.epochs,
                           lr=args.lr, device=args.device, progress=False, random_state=0)
    train_time = time.perf_counter() - start
    print(f"training time {train_time:.1f} s, epochs run {len(model[-1].embedder_.history_)}, "
          f"threshold (validation writers) {model[-1].threshold:.3f}")
    report = evaluate(model, test, ks=(1, 3, 5, 10), out_dir=args.out)
    print(format_report(report))
    writer = test["writer"].iloc[0]
    genuine = test[(test["writer"] == writer) & test["genuine"]]["path"].tolist()
    references, questioned = genuine[:5], test["path"].tolist()[:40]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for q in questioned:
            perform_voting(model, q, references)
        times.append(time.perf_counter() - start)
    print(f"verification, one questioned vs 5 references per call (preprocessing included): "
          f"{len(questioned) / np.median(times):.1f} questioned/s (median of 3)")


if __name__ == "__main__":
    main()
