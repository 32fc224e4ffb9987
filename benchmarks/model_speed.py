"""Training and verification throughput of the Siamese model on this machine.

Usage: python benchmarks/model_speed.py [--size 96 144] [--backbones resnet_tiny resnet18] [--device auto]
Prints, per backbone: training triplets/second (explicit triplets, batch 32) and verification
questioned signatures/second with the references' embeddings cached (preprocessed inputs; add
the preprocessing rate of benchmarks/preprocessing_speed.py for paths). Median of 3 runs.
"""

import argparse
import os
import time

import numpy as np
import torch

from sigest import LogisticSiameseRegression, SiameseEmbedder


def median_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 144))
    parser.add_argument("--backbones", nargs="+", default=["resnet_tiny", "resnet18"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    h, w = args.size
    triplets = rng.rand(args.n, 3, 1, h, w).astype(np.float32)
    pairs = rng.rand(args.n, 2, 1, h, w).astype(np.float32)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, threads {torch.get_num_threads()}, "
          f"CUDA {torch.cuda.is_available()}, images {h}x{w}")
    for backbone in args.backbones:
        net = SiameseEmbedder(module__backbone=backbone, max_epochs=1, batch_size=32, device=args.device, random_state=0)
        net.fit(triplets[:32])  # warm-up
        train_s = median_time(lambda: net.partial_fit(triplets))
        clf = LogisticSiameseRegression(net).fit(pairs, np.arange(args.n) % 2)
        references = clf.embed(pairs[:5, 0])
        questioned = pairs[:, 1]

        def verify():
            q = clf.embed(questioned)
            E = np.stack([np.repeat(references[None], len(q), 0), np.repeat(q[:, None], 5, 1)], axis=2)
            clf.proba_from_embeddings(E.reshape(-1, 2, E.shape[-1])).reshape(len(q), 5).mean(axis=1)

        verify_s = median_time(verify)
        print(f"{backbone:12s} device {net.device}: training {args.n / train_s:7.1f} triplets/s, "
              f"verification {args.n / verify_s:7.1f} questioned/s (5 cached references)")


if __name__ == "__main__":
    main()
