"""Writer-independent evaluation: exhaustive pairs of unseen writers, scored, measured and plotted."""

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.frozen import FrozenEstimator
from sklearn.utils import Bunch

from .datasets import check_writers, make_pairs, make_reference_sets
from .metrics import build_confusion_matrix, equal_error_rate, far_frr, per_writer_eer, roc_auc
from .verification import VotingVerifier, _embeds, _head_views, _proba_at, _select, _split_ink

__all__ = ["score_pairs", "choose_threshold", "threshold_metrics", "voting_scores", "evaluate", "format_report"]


def _preprocessed(model, items):
    """Preprocess each distinct item once: images (n_unique, 1, H, W), their ink measures (or None), item -> row."""
    unique = list(dict.fromkeys(items))
    images, ink = _split_ink(model[:-1].transform(unique))
    return images, ink, {item: i for i, item in enumerate(unique)}


def score_pairs(model, references, questioned):
    """Genuine probability of each (reference, questioned) pair, preprocessing and embedding each image once.

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        Fitted ``preprocess -> verifier`` pipeline.
    references, questioned : sequence of paths of length n_pairs

    Returns
    -------
    scores : ndarray of shape (n_pairs,)
    """
    images, ink, index = _preprocessed(model, list(references) + list(questioned))
    at = np.column_stack([[index[r] for r in references], [index[q] for q in questioned]])
    verifier = model[-1]
    if _embeds(verifier):
        return _proba_at(verifier, _head_views(verifier, images), at, None if ink is None else ink[at])
    return verifier.predict_proba(_select(images, ink, at))[:, 1]  # any pair classifier: the pairs themselves


def choose_threshold(y_true, scores):
    """The EER threshold of validation scores, to apply unchanged to test writers."""
    return equal_error_rate(y_true, scores)[1]


def threshold_metrics(scores, kinds, threshold):
    """FRR, FAR (skilled and random) and accuracy (genuine vs skilled) at one threshold.

    Parameters
    ----------
    scores : ndarray of shape (n,)
    kinds : ndarray of shape (n,), "genuine", "skilled" or "random"
    threshold : float
    """
    scores, kinds = np.asarray(scores), np.asarray(kinds)
    far_skilled, frr = far_frr(scores[kinds == "genuine"], scores[kinds == "skilled"], threshold)
    far_random, _ = far_frr(scores[kinds == "genuine"], scores[kinds == "random"], threshold)
    mask = kinds != "random"
    accuracy = float(np.mean((scores[mask] >= threshold) == (kinds[mask] == "genuine")))
    return {"threshold": float(threshold), "FRR": frr, "FAR_skilled": far_skilled, "FAR_random": far_random,
            "accuracy": accuracy}


def voting_scores(model, table, k, *, voting="soft", random_state=0):
    """Score each writer's questioned signatures against ``k`` of its genuine references.

    For each writer with more than ``k`` genuine signatures, ``k`` are drawn as references; the
    other genuine signatures and all its skilled forgeries are questioned with a
    :class:`VotingVerifier` over the fitted pipeline's verifier.

    ``voting="normalized"`` scores by the model's calibrated distance-ratio voter
    (``model.reference_voter_``) when it has one, else by the negated distance ratio of
    :meth:`~sigest.verification.VotingVerifier.distance_ratio` (uncalibrated; EER and AUC are the
    same either way; needs k >= 2).

    Returns
    -------
    votes : pandas.DataFrame
        Columns ``writer``, ``label`` (1 genuine, 0 skilled forgery) and ``score``.
    """
    try:
        sets = make_reference_sets(table, k, random_state=random_state)
    except ValueError:
        return pd.DataFrame(columns=["writer", "label", "score"])
    rows = sets[["questioned", *(f"ref_{i}" for i in range(1, k + 1))]].to_numpy().tolist()
    labels, writers = sets["label"].to_numpy(), sets["writer"].to_numpy()
    images, ink, index = _preprocessed(model, [item for row in rows for item in row])
    at = np.array([[index[item] for item in row] for row in rows])
    X, first = ({"images": images, "ink": ink, "rows": rows} for rows in (at, at[:1]))
    voter = getattr(model, "reference_voter_", None)
    if voting == "normalized" and voter is not None:
        score = voter.predict_proba(X)[:, 1]
    elif voting == "normalized":
        score = -VotingVerifier(FrozenEstimator(model[-1])).fit(first, [1]).distance_ratio(X)
    else:
        score = VotingVerifier(FrozenEstimator(model[-1]), voting=voting).fit(first, [1]).predict_proba(X)[:, 1]
    return pd.DataFrame({"writer": writers, "label": labels, "score": score})


def evaluate(model, table, *, writers=None, threshold=None, n_random_per_writer=None, ks=(1, 3, 5, 10),
             out_dir=None, random_state=0):
    """Writer-independent evaluation of a fitted pipeline on unseen writers.

    Builds the exhaustive pairs of every test writer (every genuine/genuine and genuine/skilled
    pair, plus random forgeries from other test writers), scores them and measures: EER with a
    global threshold and with per-writer thresholds, AUC (skilled forgeries), FRR/FAR/accuracy at
    ``threshold`` (chosen on validation writers) and at the test-oracle EER threshold, and the
    EER of k-reference voting for each k in ``ks`` (soft, and distance-ratio normalised for k >= 2).

    Parameters
    ----------
    model : sklearn.pipeline.Pipeline
        Fitted ``preprocess -> verifier`` pipeline.
    table : pandas.DataFrame
        Signature table with a ``path`` column.
    writers : sequence of str or None
        Test writers; None uses every writer of the table (which must be unseen by the model).
    threshold : float or None
        Decision threshold chosen on validation writers; None takes the model's own
        (``model[-1].threshold``).
    n_random_per_writer : int or None
        Random-forgery pairs per writer (see :func:`sigest.datasets.make_pairs`).
    ks : sequence of int, default=(1, 3, 5, 10)
        Reference counts for the voting evaluation.
    out_dir : str, path-like or None
        Folder for ``scores.csv``, ``per_writer.csv``, ``metrics.csv``, ``roc.png``,
        ``histogram.png`` and ``confusion_matrix.png``; None writes nothing.
    random_state : int, default=0

    Returns
    -------
    report : sklearn.utils.Bunch
        ``metrics`` (dict), ``per_writer`` (DataFrame), ``scores`` (DataFrame of the pairs with a
        ``score`` column), ``voting`` (DataFrame per k and voting: EER, AUC, and accuracy on
        genuine vs skilled at the model's own threshold (soft: the pair threshold; normalized: the
        voter's) and at the test-oracle EER threshold), ``threshold`` (float).
    """
    check_writers(table if writers is None else table[table["writer"].astype(str).isin([str(w) for w in writers])])
    pairs = make_pairs(table, protocol="exhaustive", forgeries="both", n_random_per_writer=n_random_per_writer,
                       writers=writers, random_state=random_state)
    pairs["score"] = score_pairs(model, pairs["reference"].tolist(), pairs["questioned"].tolist())
    if threshold is None:
        threshold = float(getattr(model[-1], "threshold", 0.5))
    skilled = pairs[pairs["kind"] != "random"]
    eer, eer_threshold = equal_error_rate(skilled["label"], skilled["score"])
    metrics = {
        "n_writers": int(pairs["writer"].nunique()),
        "n_pairs": len(pairs),
        "EER": eer,
        "EER_per_writer": per_writer_eer(skilled["label"], skilled["score"], skilled["writer"]),
        "AUC": roc_auc(skilled["label"], skilled["score"]),
        **{f"{k}@chosen": v for k, v in threshold_metrics(pairs["score"], pairs["kind"], threshold).items()},
        **{f"{k}@oracle_EER": v for k, v in threshold_metrics(pairs["score"], pairs["kind"], eer_threshold).items()},
    }
    per_writer = pd.DataFrame(
        [
            {"writer": w, "EER": equal_error_rate(g["label"], g["score"])[0] if g["label"].nunique() == 2 else np.nan,
             **threshold_metrics(g["score"], g["kind"], threshold)}
            for w, g in skilled.groupby("writer", sort=True)
        ]
    )
    test_table = table if writers is None else table[table["writer"].astype(str).isin([str(w) for w in writers])]
    voter = getattr(model, "reference_voter_", None)
    voting = []
    for k in ks:
        for method in ("soft", "normalized") if k >= 2 else ("soft",):
            votes = voting_scores(model, test_table, k, voting=method, random_state=random_state)
            if votes["label"].nunique() == 2:
                eer, oracle = equal_error_rate(votes["label"], votes["score"])
                chosen = threshold if method == "soft" else voter.threshold if voter is not None else np.nan
                genuine = votes["label"].to_numpy() == 1
                voting.append({"k": k, "voting": method, "n_questioned": len(votes), "EER": eer,
                               "AUC": roc_auc(votes["label"], votes["score"]),
                               "accuracy@chosen": np.mean((votes["score"].to_numpy() >= chosen) == genuine)
                               if np.isfinite(chosen) else np.nan,
                               "accuracy@oracle_EER": np.mean((votes["score"].to_numpy() >= oracle) == genuine)})
    report = Bunch(metrics=metrics, per_writer=per_writer, scores=pairs, voting=pd.DataFrame(voting),
                   threshold=threshold)
    if out_dir is not None:
        _write_report(report, Path(out_dir))
    return report


def format_report(report):
    """The report's metrics as readable lines (percentages for rates)."""
    m = report.metrics
    lines = [
        f"writers {m['n_writers']}, pairs {m['n_pairs']}",
        f"EER (global threshold)     {100 * m['EER']:6.2f} %",
        f"EER (per-writer threshold) {100 * m['EER_per_writer']:6.2f} %",
        f"AUC                        {m['AUC']:.4f}",
    ]
    for where in ("chosen", "oracle_EER"):
        lines.append(
            f"at {where:10s} threshold {m[f'threshold@{where}']:.3f}: FRR {100 * m[f'FRR@{where}']:.2f} %, "
            f"FAR skilled {100 * m[f'FAR_skilled@{where}']:.2f} %, FAR random {100 * m[f'FAR_random@{where}']:.2f} %, "
            f"accuracy {100 * m[f'accuracy@{where}']:.2f} %"
        )
    for row in report.voting.to_dict("records"):
        chosen = row["accuracy@chosen"]
        accuracy = (f", accuracy {100 * chosen:.2f} % at the model's threshold" if np.isfinite(chosen) else "") + \
            f", {100 * row['accuracy@oracle_EER']:.2f} % at the oracle EER threshold"
        lines.append(f"voting k={row['k']:2d} {row['voting']:10s}: EER {100 * row['EER']:.2f} %, AUC {row['AUC']:.4f}"
                     f"{accuracy} ({row['n_questioned']} questioned)")
    return "\n".join(lines)


def _write_report(report, out):
    from ._files import atomic_path
    from .plotting import plot_roc, plot_score_histogram

    out.mkdir(parents=True, exist_ok=True)
    scores = report.scores
    tables = {"scores.csv": scores, "per_writer.csv": report.per_writer, "voting.csv": report.voting,
              "metrics.csv": pd.Series(report.metrics).to_frame("value")}
    for name, table in tables.items():
        with atomic_path(out / name) as tmp:
            table.to_csv(tmp, index=name == "metrics.csv")
    skilled = scores[scores["kind"] != "random"]
    plot_roc(skilled["label"], skilled["score"], out / "roc.png", title=f"ROC, EER {100 * report.metrics['EER']:.2f} %")
    plot_score_histogram(scores["score"], scores["kind"], report.threshold, out / "histogram.png")
    build_confusion_matrix(skilled["label"], (skilled["score"] >= report.threshold).astype(int),
                           path=out / "confusion_matrix.png", title="Genuine vs skilled, chosen threshold")
