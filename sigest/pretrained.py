"""Verifiers shipped inside the package, named like torchvision's weights: no download, no training.

>>> import sigest
>>> model = sigest.pretrained("sigest-base")              # a fitted Pipeline
>>> model.predict_proba(pairs)[:, 1]                      # doctest: +SKIP

Each entry of :class:`PretrainedVerifier` names a safe model file in ``sigest/weights`` (read with
:func:`sigest.persistence.load`, which runs no code) and its ``meta``: training data, recipe, input
size, threshold and the recipe's measured writer-independent metrics. The file's own metadata holds
the same facts, so a copy of the file explains itself.
"""

from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from pathlib import Path

from .persistence import load

__all__ = ["PretrainedVerifier", "pretrained", "list_pretrained", "weights_path"]


@dataclass(frozen=True)
class Weights:
    """A shipped model: the file under ``sigest/weights`` and what is known about it."""

    file: str
    meta: dict = field(default_factory=dict)


_NETWORK = {  # what the shipped verifiers share: one network, trained once
    "training_data": "SigComp2011 Dutch (43 writers), CEDAR (55), BHSig260 Bengali 1-50 (50): 130 writers "
                     "trained on, 18 held out for checkpoint selection, the pair head and the threshold",
    "licences": "CEDAR and BHSig260 are distributed for research use; SigComp2011 under the ICDAR 2011 "
                "competition terms. Use of this model inherits those terms.",
    "input": "a cropped scan of one signature, dark ink on light paper, about 100-300 dpi",
    "input_size": (150, 220),
}


class PretrainedVerifier(Enum):
    """The verifiers that ship with sigest; ``.value.meta`` describes each."""

    SIGEST_BASE = Weights(
        file="sigest-base.safetensors",
        meta={
            "name": "sigest-base",
            **_NETWORK,
            "recipe": "resnet_tiny (spatial attention after stages 3 and 4), 128-d embedding, 150x220 input, "
                      "batch-hard triplet loss (margin 0.2, skilled forgeries as negatives) plus the local triplet "
                      "loss on the second stage's local descriptors (LocalMatchTripletLoss, weight 1, margin 0.1), "
                      "32 writers x 8 signatures a batch, AdamW lr 3e-3, checkpoint chosen by validation-writer "
                      "EER (epoch 20 of 32, trained on a 2-core CPU); embedding "
                      "whitened by the training writers' own spread (shrinkage 0.1); pair head "
                      "on [|a-b|, a*b], the distance between the pair's texture views (each channel's spread "
                      "over the second stage's map, whitened alike), their local match distances each way (the "
                      "second stage's map as local descriptors matched position by position, sigest."
                      "verification.local_pair_match_distances) and the pair's ink differences (ink pixels and stroke width on "
                      "the page)",
            "threshold": 0.690,
            "reference_voter": "distance ratios (mean distance to the references over their mean mutual distance) "
                               "of the embedding and of four more views of the same forward pass (the penultimate "
                               "stage pooled; the last map pooled over 4 vertical strips, through the projection; "
                               "each channel's spread over the second stage's map, each whitened by the training "
                               "writers' own spread; the second stage's map as local descriptors matched position "
                               "by position in the references together, sigest.verification."
                               "local_set_distance_ratio), and ink differences "
                               "(|log x - mean log x of the references| "
                               "for the ink pixels and the stroke width on the page), logistic calibration and "
                               "threshold 0.483 fitted with 5 references "
                               "on the 18 validation writers; sigest verify uses it with 3 or more references",
            "metrics": {
                "protocol": "same recipe, writer-disjoint folds 0-2 of 5 per data set, seed 0, embedding distance; "
                            "see docs/MODEL_CARD.md",
                "EER_global": {"bhsig260-bengali": 0.120, "cedar": 0.210, "sigcomp2011-dutch": 0.214},
                "EER_per_writer": {"bhsig260-bengali": 0.089, "cedar": 0.168, "sigcomp2011-dutch": 0.147},
                "EER_k5_normalized": {"bhsig260-bengali": 0.106, "cedar": 0.128, "sigcomp2011-dutch": 0.123},
                "scoring_protocol": "the CPU recipe, seeds 0-1 x folds 0-4, scored as this file scores "
                                    "(benchmarks/scoring.py --whitening 0.1): single pairs by the pair head "
                                    "with ink, 5 references by the distance ratio with ink",
                "EER_single_pair_ink": {"bhsig260-bengali": 0.073, "cedar": 0.166, "sigcomp2011-dutch": 0.132},
                "EER_k5_ratio_ink": {"bhsig260-bengali": 0.044, "cedar": 0.084, "sigcomp2011-dutch": 0.058},
                "views_protocol": "the same recipe trained on a GPU with the fixed writer sampler, 30 runs (folds 0-4 "
                                  "x seeds 0-1 x 3 training variants), benchmarks/views.py, 5 reference draws: "
                                  "5 references by the ratios of the three views with ink, as this file scores",
                "EER_k5_views_ink": {"bhsig260-bengali": 0.042, "cedar": 0.073, "sigcomp2011-dutch": 0.053},
                "EER_k5_ratio_ink_same_runs": {"bhsig260-bengali": 0.047, "cedar": 0.085, "sigcomp2011-dutch": 0.058},
                "texture_protocol": "the same recipe, 11 writer folds x 2 trainings (CPU float32, GPU "
                                    "bfloat16), seed 0, benchmarks/views.py: single pairs by the pair head with "
                                    "ink fitted as this file's (rule 'pair head'), with and without the texture "
                                    "distance; 5 references by the voter's ratios with ink, with and without the "
                                    "texture ratio",
                "EER_single_pair_ink_texture": {"bhsig260-bengali": 0.059, "cedar": 0.136, "sigcomp2011-dutch": 0.094},
                "EER_single_pair_ink_same_runs": {"bhsig260-bengali": 0.067, "cedar": 0.159,
                                                  "sigcomp2011-dutch": 0.111},
                "EER_k5_views_texture_ink": {"bhsig260-bengali": 0.025, "cedar": 0.061, "sigcomp2011-dutch": 0.039},
                "EER_k5_views_ink_same_runs": {"bhsig260-bengali": 0.027, "cedar": 0.061, "sigcomp2011-dutch": 0.045},
                "local_protocol": "this recipe (with the local triplet loss) against the same without it, 11 writer "
                                  "folds x seeds 0-1 trained side by side on a GPU (bfloat16), benchmarks/views.py, "
                                  "5 reference draws: 5 references by the voter's ratios with ink (its four views "
                                  "and the local one, pairwise as first shipped, and set-matched as this file "
                                  "scores); single pairs by the pair head with "
                                  "ink and texture",
                "EER_k5_views_local_ink": {"bhsig260-bengali": 0.013, "cedar": 0.046, "sigcomp2011-dutch": 0.016},
                "EER_k5_views_local_set_ink": {"bhsig260-bengali": 0.012, "cedar": 0.043, "sigcomp2011-dutch": 0.014},
                "EER_k5_views_local_ink_without_local_loss": {"bhsig260-bengali": 0.017, "cedar": 0.059,
                                                              "sigcomp2011-dutch": 0.041},
                "EER_single_pair_ink_texture_local_loss": {"bhsig260-bengali": 0.045, "cedar": 0.121,
                                                           "sigcomp2011-dutch": 0.059},
                "EER_single_pair_ink_texture_without_local_loss": {"bhsig260-bengali": 0.054, "cedar": 0.138,
                                                                   "sigcomp2011-dutch": 0.094},
                "local_pair_protocol": "the same 22 networks with the local loss, the pair head fitted as this "
                                       "file's on each run's validation writers, with the local match distances "
                                       "each way beside texture and ink, as this file scores single pairs",
                "EER_single_pair_ink_texture_local": {"bhsig260-bengali": 0.040, "cedar": 0.108,
                                                      "sigcomp2011-dutch": 0.054},
            },
        },
    )
    SIGEST_BASE_FAST = Weights(
        file="sigest-base-fast.safetensors",
        meta={
            "name": "sigest-base-fast",
            **_NETWORK,
            "recipe": "sigest-base's network, whitening and views, with the local view's grids pooled 2 x 2 "
                      "(10 x 14 positions instead of 19 x 28, sigest.nn.pool_local_descriptors) before the pair "
                      "head and the voter match them (LogisticSiameseRegression(local_pooling=2), "
                      "VotingVerifier(local_pooling=2)); the pair head and the voter refitted on the same 18 "
                      "validation writers",
            "threshold": 0.686,
            "reference_voter": "as sigest-base's, on the pooled local grids: threshold 0.532 fitted with 5 references "
                               "on the 18 validation writers; about 2.3x faster than sigest-base's on 2 CPU cores "
                               "(README, 'Pooled grids')",
            "metrics": {
                "protocol": "the 22 networks of sigest-base's recipe (11 writer folds x seeds 0-1, with the local "
                            "loss), benchmarks/views.py --local-pooling 2, 3 reference draws: 5 references by the "
                            "voter's ratios with ink as this file scores, single pairs by the pair head as this "
                            "file's; the same networks unpooled in brackets (sigest-base's scoring)",
                "EER_k5_views_local_set_ink": {"bhsig260-bengali": 0.016, "cedar": 0.046, "sigcomp2011-dutch": 0.018},
                "EER_k5_views_local_set_ink_unpooled": {"bhsig260-bengali": 0.011, "cedar": 0.043,
                                                        "sigcomp2011-dutch": 0.015},
                "EER_single_pair_ink_texture_local": {"bhsig260-bengali": 0.043, "cedar": 0.117,
                                                      "sigcomp2011-dutch": 0.056},
                "EER_single_pair_ink_texture_local_unpooled": {"bhsig260-bengali": 0.040, "cedar": 0.108,
                                                               "sigcomp2011-dutch": 0.054},
            },
        },
    )


def list_pretrained():
    """Names of the shipped verifiers."""
    return [entry.value.meta["name"] for entry in PretrainedVerifier]


def weights_path(name="sigest-base"):
    """Path of a shipped verifier's model file inside the installed package."""
    entries = {entry.value.meta["name"]: entry for entry in PretrainedVerifier}
    if name not in entries:
        raise ValueError(f"unknown pretrained verifier {name!r}; shipped: {', '.join(entries)}")
    path = Path(str(resources.files("sigest") / "weights" / entries[name].value.file))
    if not path.is_file():
        raise FileNotFoundError(f"the package lacks its weights file {path}; reinstall sigest")
    return path


def pretrained(name="sigest-base", *, device="auto"):
    """A shipped, fitted verifier pipeline, read from the package's safe model file.

    Parameters
    ----------
    name : str, default="sigest-base"
        One of :func:`list_pretrained`.
    device : str, default="auto"

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        ``PreprocessImage -> LogisticSiameseRegression``, fitted; ``predict_proba`` takes (n, 2)
        (reference, questioned) paths or images; ``verifier.threshold`` was chosen on held-out writers.
    """
    return load(weights_path(name), device=device)
