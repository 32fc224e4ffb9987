"""A model file that loading cannot turn into code execution: tensors in safetensors, the rest as JSON.

A fitted ``preprocess -> verifier`` pipeline is written as one ``.safetensors`` file: the network's
weights, the logistic head's and the distance-ratio voter's coefficients as tensors, and in the
file's metadata a JSON document with the preprocessing parameters, the network's architecture
(registry names and sizes), the decision thresholds, the versions of sigest and torch, and what
the model was trained on. Reading it
parses JSON and copies numbers; nothing is unpickled, so a planted payload cannot run.

``joblib.dump``/``joblib.load`` of the pipeline keep working, as scikit-learn users expect, but a
joblib or pickle file runs code when loaded: load those only from a source you trust.
"""

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted
from skorch.history import History

from ._files import atomic_path
from .embedder import SiameseEmbedder
from .nn import SiameseResNet
from .preprocessing import PreprocessImage, TestPreprocessImage
from .training import verifier_pipeline
from .verification import LogisticSiameseRegression, VotingVerifier

__all__ = ["save", "load", "FORMAT_VERSION", "ModelFormatError"]

FORMAT_VERSION = 7  # 2: the view whitening, the voter's extra views; 3: the texture view, the head's extra views;
# 4: the local view's centre (embedder.local_mean), the voter's local ratio; 5: the voter's set-matched local ratio;
# 6: the pair head's local match distance; 7: the local grids' pooling (head and voter)
_READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
_PREPROCESSORS = {cls.__name__: cls for cls in (PreprocessImage, TestPreprocessImage)}
_ARCHITECTURE = ("backbone", "embedding_dim", "attention", "attention_stages", "in_channels", "dropout")


class ModelFormatError(ValueError):
    """The file is not a sigest model, or one this version of sigest cannot read."""


def _versions():
    from . import __version__

    return {"sigest": __version__, "torch": torch.__version__.split("+")[0]}


def _architecture(embedder):
    params = embedder.get_params()
    defaults = {name: p.default for name, p in inspect.signature(SiameseResNet).parameters.items()}
    out = {name: params.get(f"module__{name}", defaults[name]) for name in _ARCHITECTURE}
    out["attention_stages"] = [int(s) for s in out["attention_stages"]]
    return out


def _plain_history(history):
    """The embedder's per-epoch records as JSON-able dicts, without per-batch details."""
    records = []
    for epoch in history:
        records.append({k: (float(v) if isinstance(v, (float, np.floating)) else v)
                        for k, v in epoch.items() if k != "batches" and isinstance(v, (int, float, bool, np.floating))})
    return records


def save(model, path, *, info=None):
    """Write a fitted pipeline as a safe ``.safetensors`` model file (atomically).

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        Fitted ``PreprocessImage -> LogisticSiameseRegression`` (as :func:`sigest.make_verifier`
        or :func:`sigest.training.train_verifier` make).
    path : str or path-like
        File to write; replaced only once the new file is complete.
    info : dict or None
        JSON-serialisable facts to keep with the model (training data, recipe, metrics). The
        writers a pipeline of :func:`sigest.training.train_verifier` learned from
        (``learned_writers_``) are kept as its ``"writers"`` unless ``info`` names them.

    Returns
    -------
    path : pathlib.Path
    """
    preprocess, verifier = model[0], model[-1]
    if len(model) != 2 or type(preprocess).__name__ not in _PREPROCESSORS or not isinstance(
            verifier, LogisticSiameseRegression):
        raise TypeError("save expects a fitted Pipeline of PreprocessImage (or TestPreprocessImage) and "
                        "LogisticSiameseRegression")
    check_is_fitted(verifier)
    voter = getattr(model, "reference_voter_", None)
    compares = verifier.compare_ink or (voter is not None and voter.compare_ink)
    if compares and not preprocess.measure_ink:
        raise ValueError("the verifier compares ink but the preprocessing does not measure it: set "
                         "measure_ink=True on the pipeline's PreprocessImage")
    tensors = {f"embedder.{k}": v.detach().cpu().numpy() for k, v in verifier.embedder_.module_.state_dict().items()}
    tensors["head.coef"] = verifier.classifier_.coef_.astype(np.float64)
    tensors["head.intercept"] = verifier.classifier_.intercept_.astype(np.float64)
    if voter is not None:
        tensors["voter.coef"] = voter.calibrator_.coef_.astype(np.float64)
        tensors["voter.intercept"] = voter.calibrator_.intercept_.astype(np.float64)
    preprocess_params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in preprocess.get_params().items()}
    document = {
        "format": "sigest-model",
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "preprocess": {"class": type(preprocess).__name__, "params": preprocess_params},
        "network": _architecture(verifier.embedder_),
        "history": _plain_history(verifier.embedder_.history_),
        "head": {"C": verifier.C, "threshold": float(verifier.threshold), "compare_ink": bool(verifier.compare_ink),
                 "ink_scaling": float(verifier.ink_scaling), "extra_views": list(verifier.extra_views),
                 "view_scaling": float(verifier.view_scaling), "local_pooling": int(verifier.local_pooling),
                 "classes": [int(c) for c in verifier.classes_]},
        "info": {**({"writers": list(model.learned_writers_)} if hasattr(model, "learned_writers_") else {}),
                 **(info or {})},
    }
    if voter is not None:
        document["reference_voter"] = {"voting": voter.voting, "threshold": float(voter.threshold),
                                       "n_references": int(voter.n_references_),
                                       "compare_ink": bool(voter.compare_ink), "C": float(voter.C),
                                       "extra_views": list(voter.extra_views),
                                       "local_pooling": int(voter.local_pooling)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                  metadata={"sigest": json.dumps(document)})
    return path


def read_metadata(path):
    """The JSON document of a sigest model file, without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        document = json.loads(metadata["sigest"])
    except (SafetensorError, KeyError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path} is not a sigest model file ({type(exc).__name__})") from None
    if document.get("format") != "sigest-model":
        raise ModelFormatError(f"{path} is not a sigest model file")
    if document.get("format_version") not in _READABLE_VERSIONS:
        raise ModelFormatError(
            f"{path} was written by sigest {document.get('versions', {}).get('sigest', '?')} in model format "
            f"{document.get('format_version')}; this sigest {_versions()['sigest']} reads formats "
            f"{', '.join(map(str, _READABLE_VERSIONS))}")
    return document


def load(path, *, device="auto"):
    """Read a model file written by :func:`save` into a fitted pipeline; no code in the file runs.

    Parameters
    ----------
    path : str or path-like
    device : str, default="auto"
        Where the network runs: "auto" (CUDA when present), "cpu" or "cuda". A model trained on
        any device loads anywhere.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Fitted ``preprocess -> verifier``; ``predict_proba`` takes (n, 2) (reference, questioned)
        paths or images. ``pipeline.sigest_info_`` holds the file's metadata document, and
        ``pipeline.reference_voter_`` the calibrated distance-ratio voter when the file has one.
    """
    document = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelFormatError(f"{path} is not a readable sigest model file ({exc})") from None
    preprocess_spec = document["preprocess"]
    if preprocess_spec["class"] not in _PREPROCESSORS:
        raise ModelFormatError(f"{path}: unknown preprocessing {preprocess_spec['class']!r}")
    params = dict(preprocess_spec["params"])
    params["size"] = tuple(params["size"])
    preprocess = _PREPROCESSORS[preprocess_spec["class"]](**params)
    network = document["network"]
    embedder = SiameseEmbedder(device=device, **{f"module__{k}": (tuple(v) if k == "attention_stages" else v)
                                                 for k, v in network.items()})
    embedder.initialize()
    state = {k[len("embedder."):]: torch.from_numpy(np.array(v))
             for k, v in tensors.items() if k.startswith("embedder.")}
    try:
        embedder.module_.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFormatError(f"{path}: weights do not fit the network it describes ({exc})") from None
    embedder.module_.eval()
    embedder.history_ = History(document.get("history") or [{"epoch": 0}])
    head = document["head"]
    classifier = _fitted_logistic(tensors["head.coef"], tensors["head.intercept"], head["classes"], C=head["C"])
    verifier = LogisticSiameseRegression(FrozenEstimator(embedder), C=head["C"], threshold=head["threshold"],
                                         compare_ink=head.get("compare_ink", False),
                                         ink_scaling=head.get("ink_scaling", 1.0),
                                         extra_views=tuple(head.get("extra_views", ())),  # files before: ()
                                         view_scaling=head.get("view_scaling", 10.0),
                                         local_pooling=head.get("local_pooling", 1))  # files before: unpooled
    verifier.embedder_ = embedder
    verifier.classifier_ = classifier
    verifier.classes_ = classifier.classes_
    verifier.input_shape_ = (network["in_channels"], *preprocess.size)
    pipeline = verifier_pipeline(preprocess, verifier)
    pipeline.sigest_info_ = document
    if "reference_voter" in document:
        pipeline.reference_voter_ = _reference_voter(verifier, document["reference_voter"], tensors)
    return pipeline


def _fitted_logistic(coef, intercept, classes, C=1.0):
    """A fitted binary ``LogisticRegression`` from its stored coefficients: coef (1, n_features), intercept (1,)."""
    model = LogisticRegression(C=C)
    model.coef_ = np.array(coef)
    model.intercept_ = np.array(intercept)
    model.classes_ = np.array(classes)
    model.n_features_in_ = model.coef_.shape[1]
    model.n_iter_ = np.array([0])
    return model


def _reference_voter(verifier, spec, tensors):
    """The fitted distance-ratio :class:`VotingVerifier` a file describes, around the loaded verifier."""
    voter = VotingVerifier(FrozenEstimator(verifier), voting=spec["voting"], threshold=spec["threshold"],
                           compare_ink=spec.get("compare_ink", False), C=spec.get("C", 1.0),
                           extra_views=tuple(spec.get("extra_views", ())),  # files before the views: ()
                           local_pooling=spec.get("local_pooling", 1))
    voter.estimator_ = FrozenEstimator(verifier)
    voter.calibrator_ = _fitted_logistic(tensors["voter.coef"], tensors["voter.intercept"], [0, 1], C=voter.C)
    voter.classes_ = np.array([0, 1])
    voter.n_references_ = spec["n_references"]
    return voter
