"""Save a fitted pipeline and load it back: the safe format (``sigest.save``/``sigest.load``) and joblib.

The safe ``.safetensors`` file loads without running code and on any device. A joblib file is what
scikit-learn users know; it runs code when loaded, so load one only from a source you trust.
"""

import sys
import tempfile
from pathlib import Path

import joblib
import numpy as np

import sigest
from sigest import make_verifier
from sigest.datasets import make_pairs, make_signatures


def main(n_writers=12, max_epochs=2, size=(64, 96), path=None):
    data = make_signatures(n_writers=n_writers, n_genuine=6, n_forged=3, random_state=0)
    pairs = make_pairs(data.table, protocol="balanced", forgeries="both", n_per_writer=10, random_state=0)
    X = pairs[["reference", "questioned"]]
    model = make_verifier(size=size, max_epochs=max_epochs, random_state=0).fit(X, pairs["label"])
    folder = Path(path or tempfile.mkdtemp())
    safe = sigest.save(model, folder / "verifier.safetensors")
    joblib.dump(model, folder / "verifier.joblib")
    expected = model.predict_proba(X)
    same_safe = np.allclose(sigest.load(safe).predict_proba(X), expected, rtol=1e-5, atol=1e-6)
    same_joblib = np.array_equal(joblib.load(folder / "verifier.joblib").predict_proba(X), expected)
    print(f"saved {safe} and verifier.joblib; same probabilities after loading: safe {same_safe}, "
          f"joblib {same_joblib}")
    return same_safe and same_joblib


if __name__ == "__main__":
    main(path=sys.argv[1] if len(sys.argv) > 1 else None)
