"""Preprocessing throughput in images/second on a real signature folder.

Usage: python benchmarks/preprocessing_speed.py [DATA_FOLDER] [--n 200] [--repeats 3]
Prints the median of ``repeats`` runs for PreprocessImage and TestPreprocessImage, on one core and
with all cores (n_jobs=-1).
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from sigest.datasets import load_signatures
from sigest.preprocessing import PreprocessImage, TestPreprocessImage


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "sigcomp2011-dutch"
    parser.add_argument("data", nargs="?", default=default)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    paths = load_signatures(args.data).path.tolist()[: args.n]
    print(f"{len(paths)} images from {args.data}, {os.cpu_count()} CPU cores")
    for cls in (PreprocessImage, TestPreprocessImage):
        for n_jobs in (1, -1):
            pre = cls(n_jobs=n_jobs)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                pre.transform(paths)
                times.append(time.perf_counter() - start)
            print(f"{cls.__name__:20s} n_jobs={n_jobs:2d}: {len(paths) / np.median(times):7.1f} images/s "
                  f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
