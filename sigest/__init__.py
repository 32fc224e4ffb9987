"""sigest: offline handwritten signature verification with scikit-learn and skorch estimators.

Stages, each in the module named after it: :mod:`sigest.datasets` (folders, pairs, triplets,
writer splits, synthetic signatures), :mod:`sigest.preprocessing` (transformers and pure steps),
:mod:`sigest.nn` (pure PyTorch network, attention, loss, registries), :mod:`sigest.embedder`
(skorch estimator), :mod:`sigest.verification` (pair classifier, voting), :mod:`sigest.training` (the pipeline and its
training recipe),
:mod:`sigest.metrics` and :mod:`sigest.evaluation` (the field's metrics, writer-independent).
"""

from .embedder import SiameseEmbedder, embedding_targets
from .persistence import load, save
from .pretrained import list_pretrained, pretrained
from .preprocessing import PreprocessImage, TestPreprocessImage
from .seed_api import get_predictions_for_single, perform_voting, train_model
from .training import calibrate, make_verifier, train_siamese_model, train_verifier
from .verification import LogisticSiameseRegression, VotingVerifier

__version__ = "0.1.0"

__all__ = [
    "LogisticSiameseRegression",
    "PreprocessImage",
    "SiameseEmbedder",
    "TestPreprocessImage",
    "VotingVerifier",
    "calibrate",
    "embedding_targets",
    "get_predictions_for_single",
    "list_pretrained",
    "load",
    "make_verifier",
    "perform_voting",
    "pretrained",
    "save",
    "train_model",
    "train_siamese_model",
    "train_verifier",
]
