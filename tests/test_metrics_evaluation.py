import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GridSearchCV, GroupKFold

from sigest import make_verifier
from sigest.datasets import load_signatures, make_pairs, make_signatures, save_signatures, split_writers, writer_groups
from sigest.evaluation import choose_threshold, evaluate, threshold_metrics, voting_scores
from sigest.metrics import (
    build_confusion_matrix,
    calculate_accuracy,
    eer_scorer,
    equal_error_rate,
    far_frr,
    per_writer_eer,
    roc_auc,
)


def test_far_frr_and_eer_on_known_scores():
    genuine = np.array([0.9, 0.8, 0.7, 0.4])
    forged = np.array([0.1, 0.2, 0.3, 0.75])
    far, frr = far_frr(genuine, forged, 0.5)
    assert far == 0.25 and frr == 0.25
    y = np.r_[np.ones(4), np.zeros(4)]
    eer, threshold = equal_error_rate(y, np.r_[genuine, forged])
    assert eer == pytest.approx(0.25)
    assert far_frr(genuine, forged, threshold) == (0.25, 0.25)
    assert equal_error_rate(y, np.r_[genuine + 1, forged])[0] == 0.0
    # the threshold is on the scores' own scale, not clipped to a probability's [0, 1]
    for scale in (10.0, -3.0):
        scores = (np.r_[genuine, forged] + 1) * scale if scale > 0 else -np.r_[forged, genuine] * abs(scale)
        eer, threshold = equal_error_rate(y, scores)
        assert eer == pytest.approx(0.25)
        assert far_frr(scores[:4], scores[4:], threshold) == (0.25, 0.25)
    assert roc_auc(y, np.r_[genuine, forged]) == pytest.approx(14 / 16)


def test_per_writer_eer_uses_one_threshold_per_writer():
    # each writer separable at its own threshold, not at a common one
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
    writers = np.array(["a"] * 4 + ["b"] * 4)
    assert per_writer_eer(y, scores, writers) == 0.0
    assert equal_error_rate(y, scores)[0] > 0


def test_accuracy_and_confusion_matrix_plot(tmp_path):
    y, pred = [1, 1, 0, 0], [1, 0, 0, 0]
    assert calculate_accuracy(y, pred) == 0.75
    matrix = build_confusion_matrix(y, pred, path=tmp_path / "cm.png")
    np.testing.assert_allclose(matrix, [[1.0, 0.0], [0.5, 0.5]])
    assert (tmp_path / "cm.png").stat().st_size > 1000


def test_threshold_metrics_by_kind():
    scores = np.array([0.9, 0.3, 0.6, 0.1, 0.7])
    kinds = np.array(["genuine", "genuine", "skilled", "skilled", "random"])
    m = threshold_metrics(scores, kinds, 0.5)
    assert m["FRR"] == 0.5 and m["FAR_skilled"] == 0.5 and m["FAR_random"] == 1.0 and m["accuracy"] == 0.5
    assert choose_threshold([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) >= 0.8


@pytest.fixture(scope="module")
def folder_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("signatures")
    data = make_signatures(n_writers=8, n_genuine=6, n_forged=3, image_size=(60, 120), random_state=0)
    table = load_signatures(save_signatures(data, root))
    train, test = split_writers(table, test_size=3, random_state=0)
    pairs = make_pairs(train, protocol="balanced", forgeries="both", n_per_writer=6, random_state=0)
    model = make_verifier(size=(32, 64), max_epochs=1, embedding_dim=16, random_state=0)
    model.fit(pairs[["reference", "questioned"]], pairs["label"])
    return root, table, train, test, model


def test_eer_scorer_in_grid_search(folder_and_model):
    _, _, train, _, _ = folder_and_model
    pairs = make_pairs(train, protocol="balanced", forgeries="both", n_per_writer=6, random_state=0)
    search = GridSearchCV(make_verifier(size=(32, 64), max_epochs=1, embedding_dim=16, random_state=0),
                          {"verifier__C": [0.1, 1.0]}, scoring=eer_scorer, cv=GroupKFold(n_splits=2))
    search.fit(pairs[["reference", "questioned"]], pairs["label"], groups=writer_groups(pairs))
    X, y = pairs[["reference", "questioned"]], pairs["label"]
    expected = -equal_error_rate(y, search.best_estimator_.predict_proba(X)[:, 1])[0]
    assert eer_scorer(search.best_estimator_, X, y) == pytest.approx(expected)
    assert np.all(search.cv_results_["mean_test_score"] <= 0)


def test_writer_independent_report(folder_and_model, tmp_path):
    _, _, _, test, model = folder_and_model
    report = evaluate(model, test, threshold=0.5, n_random_per_writer=5, ks=(1, 3), out_dir=tmp_path)
    # exhaustive protocol: per writer C(6, 2) = 15 G-G, 6 x 3 = 18 G-F, plus 5 random
    assert report.metrics["n_pairs"] == 3 * (15 + 18 + 5)
    assert set(report.scores["kind"]) == {"genuine", "skilled", "random"}
    assert 0 <= report.metrics["EER"] <= 1 and report.metrics["threshold@chosen"] == 0.5
    assert len(report.per_writer) == 3
    assert list(zip(report.voting["k"], report.voting["voting"])) == [(1, "soft"), (3, "soft"), (3, "normalized")]
    for name in ("scores.csv", "per_writer.csv", "metrics.csv", "roc.png", "histogram.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0
    soft = voting_scores(model, test, 3, voting="soft")
    expected = np.mean((soft["score"] >= 0.5) == (soft["label"] == 1))
    assert report.voting.loc[1, "accuracy@chosen"] == pytest.approx(expected)
    assert np.isnan(report.voting.loc[2, "accuracy@chosen"])  # no calibrated voter in this model: no threshold


def test_report_judges_the_calibrated_voter_at_its_own_threshold(folder_and_model):
    from sigest.training import fit_reference_voter

    _, _, _, test, model = folder_and_model
    images = model[0].transform(list(test["path"]))
    voter = fit_reference_voter(model[-1], test.reset_index(drop=True), images, k=3)
    model.reference_voter_ = voter
    try:
        report = evaluate(model, test, n_random_per_writer=5, ks=(3,))
        votes = voting_scores(model, test, 3, voting="normalized")
    finally:
        del model.reference_voter_  # the module's fixture stays as it was
    assert votes["score"].between(0, 1).all()  # the voter's calibrated probabilities
    expected = np.mean((votes["score"] >= voter.threshold) == (votes["label"] == 1))
    assert report.voting.loc[1, "accuracy@chosen"] == pytest.approx(expected)


def test_calibrate_refits_threshold_and_voter_on_new_writers_and_leaves_the_model_alone(folder_and_model):
    from sigest.evaluation import score_pairs
    from sigest.metrics import within_writer_pairs
    from sigest.training import calibrate, fit_reference_voter

    _, _, _, test, model = folder_and_model
    threshold = model[-1].threshold
    calibrated = calibrate(model, test, k=3)
    assert model[-1].threshold == threshold and not hasattr(model, "reference_voter_")  # the input is unchanged
    np.testing.assert_array_equal(calibrated[-1].classifier_.coef_, model[-1].classifier_.coef_)
    # the pair threshold: the EER threshold of the new writers' genuine/genuine and genuine/skilled pairs
    paths = test["path"].to_numpy()
    first, second, label = within_writer_pairs(test["writer"], test["genuine"])
    scores = score_pairs(model, paths[first], paths[second])
    assert calibrated[-1].threshold == pytest.approx(choose_threshold(label, scores), rel=1e-5)
    # the voter: fitted on the same writers' rows of 3 references, as fit_reference_voter fits it
    images = model[0].transform(list(paths))
    expected = fit_reference_voter(model[-1], test.reset_index(drop=True), images, k=3)
    np.testing.assert_allclose(calibrated.reference_voter_.calibrator_.coef_, expected.calibrator_.coef_, rtol=1e-5)
    assert calibrated.reference_voter_.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert calibrated.reference_voter_.extra_views == expected.extra_views
    # a model with a voter keeps its weights; only its threshold moves to these writers' EER threshold
    from sigest.training import _reference_rows

    _, _, train, _, _ = folder_and_model
    voter = fit_reference_voter(model[-1], train.reset_index(drop=True), model[0].transform(list(train["path"])), k=3)
    model.reference_voter_ = voter
    try:
        kept = calibrate(model, test, k=3)
        refitted = calibrate(model, test, k=3, refit_voter=True)
    finally:
        del model.reference_voter_  # the module's fixture stays as it was
    np.testing.assert_array_equal(kept.reference_voter_.calibrator_.coef_, voter.calibrator_.coef_)
    X, labels = _reference_rows(test.reset_index(drop=True), images, None, 3, 12, 0)
    assert kept.reference_voter_.threshold == pytest.approx(choose_threshold(labels, voter.predict_proba(X)[:, 1]))
    assert kept.reference_voter_.threshold != voter.threshold
    np.testing.assert_allclose(refitted.reference_voter_.calibrator_.coef_, expected.calibrator_.coef_, rtol=1e-5)
    with pytest.raises(ValueError, match="skilled forgeries"):
        calibrate(model, test[test["genuine"]])
    with pytest.raises(ValueError, match="3 genuine signatures and a skilled forgery"):
        calibrate(model, pd.concat([test[test["genuine"]].groupby("writer").head(2), test[~test["genuine"]]]))


def test_benchmark_protocol_pair_counts(tmp_path):
    """The SigComp benchmark's split and pair counts on a tiny folder of the same layout."""
    import importlib.util
    from pathlib import Path

    from conftest import write_scan

    page = np.full((30, 60), 240, np.uint8)
    page[10:20, 5:55] = 20
    for w in range(1, 13):
        for i in range(4):
            write_scan(tmp_path / f"{w:03d}" / f"{w:03d}_{i:02d}.png", page)
        for i in range(2):
            write_scan(tmp_path / f"{w:03d}_forg" / f"0201{w:03d}_{i:02d}.png", page)
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "benchmarks" / "sigcomp2011_dutch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = load_signatures(tmp_path)
    test_writers = bench.test_writers_of(table)
    assert test_writers == [f"{w:03d}" for w in range(3, 13)]
    pairs = make_pairs(table, writers=test_writers, forgeries="skilled")
    assert len(pairs) == 10 * (6 + 8)  # C(4, 2) genuine pairs and 4 x 2 skilled pairs per writer


def test_plotting_leaves_the_users_matplotlib_backend_alone(tmp_path):
    import matplotlib

    from sigest.metrics import build_confusion_matrix

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend the user chose, which a library call must not replace
    try:
        build_confusion_matrix([0, 1, 1, 0], [0, 1, 0, 0], path=tmp_path / "cm.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_the_evidence_names_each_image_and_its_ink(tmp_path):
    from sigest.plotting import plot_verification

    images = np.zeros((3, 20, 30), np.float32)
    ink = np.array([[900, 4.2], [450, 2.1], [470, 2.0]])
    fig = plot_verification(images[0], images[1:], np.array([0.2, 0.3]), 0.1, 0.5, tmp_path / "e.png",
                            names=["q.png", "r1.png", "r2.png"], ink=ink)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "(questioned) q.png\nink 900 px, stroke 4.2 px"
    assert titles[2] == "r2.png\nink 470 px, stroke 2.0 px\nP(genuine) 0.300"
    assert fig._suptitle.get_text().startswith("FORGED")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
