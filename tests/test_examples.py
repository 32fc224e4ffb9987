"""Every example runs, on tiny settings, so none rots."""

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart():
    proba = load("quickstart").main(n_writers=8, max_epochs=1, size=(32, 64))
    assert proba.ndim == 1 and ((proba >= 0) & (proba <= 1)).all()


def test_grid_search():
    search = load("grid_search").main(n_writers=6, max_epochs=1, size=(32, 64))
    assert len(search.cv_results_["params"]) == 4


def test_save_and_load(tmp_path):
    assert load("save_and_load").main(n_writers=4, max_epochs=1, size=(32, 64), path=tmp_path)


def test_voting():
    results = load("voting").main(n_writers=8, max_epochs=1, size=(32, 64), k=3)
    assert len(results) == 2 and all(label in (0, 1) for label, _ in results)


def test_evaluate_folder(tmp_path):
    from sigest.datasets import make_signatures, save_signatures

    root = save_signatures(make_signatures(n_writers=10, n_genuine=5, n_forged=2, image_size=(60, 120),
                                           random_state=0), tmp_path / "data")
    report = load("evaluate_folder").main(root, out=tmp_path / "report", max_epochs=1, size=(32, 64), ks=(1,))
    assert np.isfinite(report.metrics["EER"]) and (tmp_path / "report" / "roc.png").is_file()
