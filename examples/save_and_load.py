"""Save a fitted pipeline with joblib and load it back (a CUDA-trained model loads on a CPU)."""

import sys
import tempfile
from pathlib import Path

import joblib
import numpy as np

from sigest import make_verifier
from sigest.datasets import make_pairs, make_signatures


def main(n_writers=12, max_epochs=2, size=(64, 96), path=None):
    data = make_signatures(n_writers=n_writers, n_genuine=6, n_forged=3, random_state=0)
    pairs = make_pairs(data.table, protocol="balanced", forgeries="both", n_per_writer=10, random_state=0)
    X = pairs[["reference", "questioned"]]
    model = make_verifier(size=size, max_epochs=max_epochs, random_state=0).fit(X, pairs["label"])
    path = Path(path or tempfile.mkdtemp()) / "verifier.joblib"
    joblib.dump(model, path)
    loaded = joblib.load(path)
    same = np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    print(f"saved {path}; loaded model gives identical probabilities: {same}")
    return same


if __name__ == "__main__":
    main(path=sys.argv[1] if len(sys.argv) > 1 else None)
