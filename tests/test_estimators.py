import io
import itertools

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline

from sigest import (
    LogisticSiameseRegression,
    SiameseEmbedder,
    VotingVerifier,
    embedding_targets,
    get_predictions_for_single,
    make_verifier,
    perform_voting,
    train_model,
    train_siamese_model,
)
from sigest.datasets import make_pairs, split_writers, writer_groups
from sigest.nn import local_best_matches, local_match_distance, pool_local_descriptors
from sigest.preprocessing import PreprocessImage
from sigest.verification import (ink_difference, local_pair_distances, local_pair_match_distances,
                                 local_set_distance_ratio, pair_features, pairs_to_targets, take_rows)

SIZE = (32, 64)


def tiny_net(**params):
    params = {"module__backbone": "resnet_tiny", "module__embedding_dim": 16, "max_epochs": 1,
              "random_state": 0, **params}
    return SiameseEmbedder(**params)


@pytest.fixture(scope="module")
def pair_data(request):
    from sigest.datasets import make_signatures

    data = make_signatures(n_writers=6, n_genuine=5, n_forged=3, image_size=(60, 120), random_state=0)
    pairs = make_pairs(data.table, protocol="balanced", forgeries="both", n_per_writer=6, random_state=0)
    X = pairs[["reference", "questioned"]].to_numpy()
    return data, pairs, X, pairs.label.to_numpy()


def test_embedder_contract_and_device_auto(pair_data):
    net = tiny_net()
    assert net.get_params()["device"] == "auto"
    assert net.device in ("cpu", "cuda")
    twin = clone(net)
    assert twin.get_params()["device"] == "auto" and twin.module__backbone == "resnet_tiny"
    with pytest.raises(NotFittedError):
        LogisticSiameseRegression(net).predict(np.zeros((1, 2, 1, 32, 64), np.float32))


def test_embedder_fits_on_triplets_and_on_labelled_images(pair_data):
    data = pair_data[0]
    images = PreprocessImage(size=SIZE).transform(list(data.images))
    targets = embedding_targets(data.writer, data.genuine)
    net = tiny_net().fit(images, targets)
    assert len(net.history_) == 1 and np.isfinite(net.history_[-1, "train_loss"])
    assert net.transform(images).shape == (len(images), 16)
    triplets = np.stack([images[0:5], images[1:6], images[10:15]], axis=1)
    assert tiny_net().fit(triplets).transform(triplets).shape == (5, 3, 16)
    with pytest.raises(ValueError, match="writer labels"):
        tiny_net().fit(images)


def test_seeded_cpu_fit_is_repeatable(pair_data):
    data = pair_data[0]
    images = PreprocessImage(size=SIZE).transform(list(data.images))
    targets = embedding_targets(data.writer, data.genuine)
    a = tiny_net(device="cpu", max_epochs=2).fit(images, targets).transform(images)
    b = tiny_net(device="cpu", max_epochs=2).fit(images, targets).transform(images)
    np.testing.assert_array_equal(a, b)


def test_pairs_to_targets_recovers_writers_and_forgeries():
    img = [np.full((1, 2, 2), v, np.float32) for v in range(6)]
    # writer A: 0, 1; writer B: 2, 3; 4 forges A; 5 is B's genuine used as a random forgery of A
    X = np.stack([np.stack(p) for p in [(img[0], img[1]), (img[2], img[3]), (img[0], img[4]), (img[1], img[5]),
                                        (img[3], img[5])]])
    y = np.array([1, 1, 0, 0, 1])
    images, targets = pairs_to_targets(X, y)
    assert len(images) == 6
    writer, genuine = targets[:, 0], targets[:, 1]
    assert writer[0] == writer[1] == writer[4] and genuine[4] == 0
    assert writer[2] == writer[3] == writer[5] != writer[0] and genuine[5] == 1


def test_images_equal_only_outside_the_sampled_pixels_stay_distinct():
    from sigest.verification import embed_distinct

    rng = np.random.default_rng(0)
    base = rng.random((3, 1, 40, 60), dtype=np.float32)
    twin = base[1].copy()
    twin[0, 0, 1] += 0.5  # off the pixel sample (every 4th of 2,400): only a whole comparison tells them apart
    images = np.concatenate([base, twin[None], base[[2, 0, 1, 1]]])
    calls = []
    out = embed_distinct(lambda x: calls.append(len(x)) or x.reshape(len(x), -1)[:, :3], images)
    assert calls == [4]  # 3 distinct images and the twin
    np.testing.assert_array_equal(out, images.reshape(len(images), -1)[:, :3])


def test_logistic_siamese_regression(pair_data):
    _, _, X, y = pair_data
    Xp = PreprocessImage(size=SIZE).transform(X)
    clf = LogisticSiameseRegression(tiny_net(), random_state=0).fit(Xp, y)
    assert list(clf.classes_) == [0, 1]
    proba = clf.predict_proba(Xp)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.predict(Xp), (proba[:, 1] >= 0.5).astype(int))
    assert np.array_equal(clf.decision_function(Xp) > 0, proba[:, 1] > 0.5)
    # a fitted embedder is reused as it is unless fine_tune
    frozen = LogisticSiameseRegression(clf.embedder_).fit(Xp, y)
    assert frozen.embedder_ is clf.embedder_
    tuned = LogisticSiameseRegression(clf.embedder_, fine_tune=True).fit(Xp, y)
    assert tuned.embedder_ is not clf.embedder_ and len(tuned.embedder_.history_) == 1
    with pytest.raises(ValueError, match="PreprocessImage"):
        clf.fit(X, y)


@pytest.mark.parametrize("compare_ink", [False, True])
def test_pipeline_grid_search_and_joblib_round_trip(pair_data, compare_ink):
    _, pairs, X, y = pair_data
    pipe = make_verifier(size=SIZE, max_epochs=1, embedding_dim=16, compare_ink=compare_ink, random_state=0)
    assert isinstance(pipe, Pipeline)
    pipe.fit(X, y)
    predicted = pipe.predict(X)
    cm = confusion_matrix(y, predicted, labels=[0, 1])
    assert cm.shape == (2, 2) and np.trace(cm) / len(y) == pytest.approx(pipe.score(X, y))
    np.testing.assert_array_equal(predicted, (pipe.predict_proba(X)[:, 1] >= pipe[-1].threshold).astype(int))
    buffer = io.BytesIO()
    joblib.dump(pipe, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    # [|a-b|, a*b], the texture views' distance (the default extra_views) and the ink differences
    assert pipe[-1].extra_views == ("texture",) and pipe[-1].classifier_.coef_.shape[1] == 32 + 1 + 2 * compare_ink
    search = GridSearchCV(
        make_verifier(size=SIZE, max_epochs=1, embedding_dim=16, compare_ink=compare_ink, random_state=0),
        {"preprocess__denoise": [0, 3], "verifier__C": [0.1, 1.0]},
        cv=GroupKFold(n_splits=2),
        scoring="roc_auc",
    )
    search.fit(X, y, groups=writer_groups(pairs))
    assert set(search.best_params_) == {"preprocess__denoise", "verifier__C"}
    assert len(search.cv_results_["mean_test_score"]) == 4


@pytest.mark.parametrize("extra_views", [(), ("texture",)])
def test_voting_verifier_embeds_each_image_once(pair_data, extra_views):
    data, _, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    clf = LogisticSiameseRegression(tiny_net(), extra_views=extra_views, random_state=0).fit(pre.transform(X), y)
    refs = list(data.images[:3])
    rows = pre.transform([[q, *refs] for q in data.images[3:9]])
    calls = []
    original = clf.head_views  # what the voter reads: the embeddings, and the views the head compares
    clf.head_views = lambda images: calls.append(len(images)) or original(images)
    voter = VotingVerifier(FrozenEstimator(clf)).fit(rows, np.ones(len(rows)))
    per_ref = voter.reference_probabilities(rows)
    assert calls == [3 + 6]  # the 3 shared references once, plus the 6 questioned
    pairs = np.stack([np.stack([rows[i, 1 + j], rows[i, 0]]) for i in range(6) for j in range(3)])
    np.testing.assert_allclose(per_ref.ravel(), clf.predict_proba(pairs)[:, 1], rtol=1e-5)
    np.testing.assert_allclose(voter.predict_proba(rows)[:, 1], per_ref.mean(axis=1), rtol=1e-6)
    hard = VotingVerifier(FrozenEstimator(clf), voting="hard").fit(rows, np.ones(len(rows)))
    np.testing.assert_allclose(hard.predict_proba(rows)[:, 1], (per_ref >= 0.5).mean(axis=1))
    with pytest.raises(ValueError, match="voting"):
        VotingVerifier(clf, voting="max").fit(rows, np.ones(len(rows)))


def test_seed_functions(pair_data):
    data, _, X, y = pair_data
    model = train_model(X, y, size=SIZE, max_epochs=1, embedding_dim=16, random_state=0)
    label, proba = get_predictions_for_single(model, data.images[0], data.images[1])
    assert label in (0, 1) and 0 <= proba <= 1
    assert proba == pytest.approx(model.predict_proba(data.images[None, :2])[0, 1])
    label, proba, per_ref = perform_voting(model, data.images[0], list(data.images[1:4]))
    assert per_ref.shape == (3,) and proba == pytest.approx(per_ref.mean())
    net = train_siamese_model(data.table, size=SIZE, valid_writers=2, progress=False, random_state=0,
                              max_epochs=2, module__backbone="resnet_tiny", module__embedding_dim=16)
    assert np.isfinite(net.history_[-1, "valid_eer"])


@pytest.mark.slow
def test_trained_model_beats_chance_and_pixel_distance():
    """On writers never seen in training, the model separates genuine from skilled-forgery pairs.

    One training run moves with the seed and with the machine's float arithmetic (thread count,
    BLAS kernels): ending on a fixed epoch, single runs gave AUC 0.733 to 0.816. So the test trains
    as the library does (:func:`train_siamese_model`: the epoch with the best validation-writer EER
    is kept), and makes its claim on the mean of three seeds, with margins well inside what every
    measured run reached.
    """
    from sklearn.metrics import roc_auc_score

    from sigest.datasets import make_signatures

    data = make_signatures(n_writers=150, n_genuine=6, n_forged=4, image_size=(60, 120), random_state=0)
    train, test = split_writers(data.table, test_size=15, random_state=0)
    pre = PreprocessImage(size=(48, 96))
    pairs = make_pairs(test, forgeries="skilled")
    X = pre.transform(pairs[["reference", "questioned"]])
    train_images = pre.transform(list(train.image))

    def auc(E):
        return roc_auc_score(pairs.label, -np.linalg.norm(E[:, 0] - E[:, 1], axis=1))

    trained, untrained = [], []
    for seed in (0, 1, 2):
        params = dict(module__backbone="resnet_tiny", lr=3e-3, writers_per_batch=8, samples_per_writer=4,
                      random_state=seed, device="cpu")
        untrained.append(auc(SiameseEmbedder(**params).initialize().transform(X)))
        net = train_siamese_model(train, images=train_images, valid_writers=15, patience=4, max_epochs=12,
                                  progress=False, **params)
        trained.append(auc(net.transform(X)))
    pixel_auc = roc_auc_score(pairs.label, -np.abs(X[:, 0] - X[:, 1]).mean(axis=(1, 2, 3)))
    print(f"AUC trained {np.round(trained, 3)}, untrained {np.round(untrained, 3)}, pixel distance {pixel_auc:.3f}")
    # measured on a 2-core CPU since the sampler fix: trained 0.789 / 0.839 / 0.834 with 2 threads, 0.775 / 0.787 /
    # 0.852 with 1 thread, seeds 3-5 0.815 / 0.814 / 0.812; untrained 0.620-0.663, pixel distance 0.715
    assert np.mean(trained) > 0.75 and np.mean(trained) > pixel_auc + 0.04, (trained, pixel_auc)
    assert np.mean(trained) > np.mean(untrained) + 0.1 and min(np.subtract(trained, untrained)) > 0.05, (trained, untrained)


def test_frozen_embedder_is_never_refit_by_grid_search(pair_data):
    _, pairs, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    Xp = pre.transform(X)
    net = tiny_net().fit(*pairs_to_targets(Xp, y))
    fits = []
    original_fit = type(net).fit
    net.fit = lambda *args, **kwargs: fits.append(1) or original_fit(net, *args, **kwargs)
    search = GridSearchCV(LogisticSiameseRegression(FrozenEstimator(net), random_state=0), {"C": [0.1, 1.0]},
                          cv=GroupKFold(n_splits=2), scoring="roc_auc")
    search.fit(Xp, y, groups=writer_groups(pairs))
    assert fits == [] and search.best_estimator_.embedder_ is net
    assert clone(LogisticSiameseRegression(FrozenEstimator(net))).embedder.estimator is net


def test_hard_voting_uses_the_pair_estimators_own_threshold(pair_data):
    data, _, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    clf = LogisticSiameseRegression(tiny_net(), random_state=0).fit(pre.transform(X), y)
    rows = pre.transform([[q, *data.images[:3]] for q in data.images[3:9]])
    per_ref = VotingVerifier(FrozenEstimator(clf)).fit(rows, np.ones(len(rows))).reference_probabilities(rows)
    clf.set_params(threshold=float(np.median(per_ref)))
    hard = VotingVerifier(FrozenEstimator(clf), voting="hard").fit(rows, np.ones(len(rows)))
    expected = (per_ref >= clf.threshold).mean(axis=1)
    np.testing.assert_allclose(hard.predict_proba(rows)[:, 1], expected)
    pairs = np.stack([np.stack([rows[i, 1 + j], rows[i, 0]]) for i in range(6) for j in range(3)])
    np.testing.assert_array_equal(hard.reference_votes(per_ref).ravel(), clf.predict(pairs))


def test_normalized_voting_divides_by_the_references_spread(pair_data):
    data, _, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    clf = LogisticSiameseRegression(tiny_net(), random_state=0).fit(pre.transform(X), y)
    rows = pre.transform([[q, *data.images[:3]] for q in data.images[3:11]])
    labels = (data.writer[3:11] == data.writer[0]) & data.genuine[3:11]
    labels = np.where(np.arange(8) < 4, 1, 0) if labels.all() or not labels.any() else labels.astype(int)
    voter = VotingVerifier(FrozenEstimator(clf), voting="normalized", extra_views=()).fit(rows, labels)
    E = clf.embed(rows)
    mean_to_refs = np.linalg.norm(E[:, 1:] - E[:, :1], axis=2).mean(axis=1)
    spread = np.mean([np.linalg.norm(E[:, a] - E[:, b], axis=1) for a, b in [(1, 2), (1, 3), (2, 3)]], axis=0)
    ratio = voter.distance_ratio(rows)
    np.testing.assert_allclose(ratio, mean_to_refs / spread, rtol=1e-5)
    proba = voter.predict_proba(rows)[:, 1]
    order = np.argsort(ratio)
    if voter.calibrator_.coef_[0, 0] < 0:  # calibrated the expected way round: nearer means more genuine
        assert np.all(np.diff(proba[order]) <= 1e-12)
    two_refs = rows[:, :3]  # another reference count than at fit: the same calibration of the ratio
    np.testing.assert_allclose(voter.predict_proba(two_refs), voter.calibrator_.predict_proba(
        np.log(voter.distance_ratio(two_refs))[:, None]))
    with pytest.raises(ValueError, match="at least 2 references"):
        voter.predict_proba(rows[:, :2])
    with pytest.raises(ValueError, match="at least 2 references"):
        VotingVerifier(FrozenEstimator(clf), voting="normalized").fit(rows[:, :2], labels)
    with pytest.raises(ValueError, match="both labels"):
        VotingVerifier(FrozenEstimator(clf), voting="normalized").fit(rows, np.ones(len(rows)))


@pytest.fixture
def voter_rows(pair_data):
    """(fitted pair classifier, 8 rows (questioned, 3 references) of preprocessed images, labels 4 x 1 then 4 x 0)."""
    data, _, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    clf = LogisticSiameseRegression(tiny_net(), random_state=0).fit(pre.transform(X), y)
    rows = pre.transform([[q, *data.images[:3]] for q in data.images[3:11]])
    labels = np.where(np.arange(8) < 4, 1, 0)
    return clf, rows, labels


def test_normalized_voting_adds_a_log_ratio_per_extra_view(voter_rows):
    clf, rows, labels = voter_rows
    calls = []
    original = clf.embed_views
    clf.embed_views = lambda images: calls.append(len(images)) or original(images)
    copied = []
    as_pairs = VotingVerifier._as_pairs
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VotingVerifier, "_as_pairs", staticmethod(lambda X: copied.append(X) or as_pairs(X)))
        voter = VotingVerifier(FrozenEstimator(clf), voting="normalized").fit(rows, labels)
    assert calls == [3 + 8]  # every distinct image once, all views from one pass
    assert copied == [] and voter.estimator_ is voter.estimator  # a frozen estimator: no pair is copied to fit it
    assert voter.extra_views == ("penultimate", "strips", "texture") and voter.calibrator_.n_features_in_ == 4

    def ratio(E):  # (n, 1 + k, d): mean distance to the references over their mean mutual distance
        spread = np.mean([np.linalg.norm(E[:, a] - E[:, b], axis=1) for a, b in [(1, 2), (1, 3), (2, 3)]], axis=0)
        return np.linalg.norm(E[:, 1:] - E[:, :1], axis=2).mean(axis=1) / spread

    views = original(rows.reshape(-1, *rows.shape[2:]))
    np.testing.assert_allclose(views["embedding"], clf.embed(rows.reshape(-1, *rows.shape[2:])), atol=1e-6)
    P, S = views["penultimate"].reshape(8, 4, -1), views["strips"].reshape(8, 4, *views["strips"].shape[1:])
    T = views["texture"].reshape(8, 4, -1)
    L = torch.as_tensor(views["local"].reshape(8, 4, *views["local"].shape[1:]))

    def local(a, b):  # the local view's distance between the a-th and b-th image of every row
        return local_match_distance(L[:, a], L[:, b], reach=(4, 6)).numpy()

    local_ratio = (np.mean([local(0, r) for r in (1, 2, 3)], axis=0)
                   / np.mean([local(a, b) for a, b in [(1, 2), (1, 3), (2, 3)]], axis=0))
    inputs = np.column_stack([np.log(voter.distance_ratio(rows)), np.log(ratio(P)),
                              np.mean([np.log(ratio(S[:, :, i])) for i in range(S.shape[2])], axis=0),
                              np.log(ratio(T)), np.log(local_ratio)])
    np.testing.assert_allclose(voter.predict_proba(rows), voter.calibrator_.predict_proba(inputs[:, :4]), rtol=1e-4)
    with_local = VotingVerifier(FrozenEstimator(clf), voting="normalized",
                                extra_views=("penultimate", "strips", "texture", "local")).fit(rows, labels)
    np.testing.assert_allclose(with_local.predict_proba(rows), with_local.calibrator_.predict_proba(inputs), rtol=1e-4)
    one = VotingVerifier(FrozenEstimator(clf), voting="normalized", extra_views=["penultimate"]).fit(rows, labels)
    np.testing.assert_allclose(one.predict_proba(rows), one.calibrator_.predict_proba(inputs[:, :2]), rtol=1e-4)
    only_local = VotingVerifier(FrozenEstimator(clf), voting="normalized", extra_views=("local",)).fit(rows, labels)
    np.testing.assert_allclose(only_local.predict_proba(rows),
                               only_local.calibrator_.predict_proba(inputs[:, [0, 4]]), rtol=1e-4)
    only_set = VotingVerifier(FrozenEstimator(clf), voting="normalized", extra_views=("local_set",)).fit(rows, labels)
    set_ratio = local_set_distance_ratio(views["local"], np.arange(32).reshape(8, 4))
    np.testing.assert_allclose(only_set.predict_proba(rows), only_set.calibrator_.predict_proba(
        np.column_stack([inputs[:, 0], np.log(set_ratio)])), rtol=1e-4)
    with pytest.raises(ValueError, match="extra_views must name"):
        VotingVerifier(FrozenEstimator(clf), voting="normalized", extra_views=("stage3",)).fit(rows, labels)
    with pytest.raises(ValueError, match="extra_views must name"):  # the pair head compares two images, not sets
        LogisticSiameseRegression(FrozenEstimator(clf.embedder_), extra_views=("local_set",)).fit(
            VotingVerifier._as_pairs(rows)[:6], np.array([1, 0] * 3))


def test_local_set_distance_ratio_matches_the_questioned_in_the_references_together():
    grids = np.random.default_rng(0).normal(size=(6, 3, 4, 5)).astype(np.float32)
    grids /= np.linalg.norm(grids, axis=3).sum(axis=(1, 2))[:, None, None, None]  # each image's weights sum to 1
    weight = np.linalg.norm(grids, axis=3)
    unit = grids / weight[..., None]

    def distance(x, others):  # 1 - sum of x's weights times each position's best similarity within (1, 1) in others
        best = np.full((3, 4), -np.inf)
        for y in others:
            for r, c, r2, c2 in itertools.product(range(3), range(4), range(3), range(4)):
                if abs(r - r2) <= 1 and abs(c - c2) <= 1:
                    best[r, c] = max(best[r, c], unit[x, r, c] @ unit[y, r2, c2])
        return 1 - (weight[x] * best).sum()

    def ratio(q, refs):
        spread_set = np.mean([distance(r, [s for s in refs if s != r]) for r in refs])
        spread_pairs = np.mean([distance(r, [s]) for r in refs for s in refs if s != r])
        return (distance(q, refs) + np.mean([distance(r, [q]) for r in refs])) / (spread_set + spread_pairs)

    position = np.array([[0, 1, 2, 3], [4, 1, 2, 3], [5, 3, 0, 2], [1, 1, 2, 3]])  # shared references; q among them
    expected = [ratio(q, list(refs)) for q, *refs in position]
    np.testing.assert_allclose(local_set_distance_ratio(grids, position, reach=(1, 1)), expected, rtol=1e-5)
    np.testing.assert_allclose(local_set_distance_ratio(grids, position, reach=(1, 1), rows_at_a_time=3), expected,
                               rtol=1e-5)
    assert local_set_distance_ratio(grids, position[:0]).shape == (0,)
    with pytest.raises(ValueError, match="k >= 2"):
        local_set_distance_ratio(grids, position[:, :2])


def test_a_pair_head_with_extra_views_adds_their_scaled_distance(voter_rows, pair_data):
    clf, rows, labels = voter_rows
    _, _, X, y = pair_data
    pairs = PreprocessImage(size=SIZE).transform(X)
    head = LogisticSiameseRegression(FrozenEstimator(clf.embedder_), extra_views=("texture",), view_scaling=3.0,
                                     random_state=0).fit(pairs, y)
    assert head.classifier_.n_features_in_ == 2 * 16 + 1
    views = head.embed_views(pairs.reshape(-1, *pairs.shape[2:]))
    E, T = (views[name].reshape(len(pairs), 2, -1) for name in ("embedding", "texture"))
    expected = np.hstack([pair_features(E), -3.0 * np.linalg.norm(T[:, 0] - T[:, 1], axis=1)[:, None]])
    np.testing.assert_allclose(head.decision_function(pairs), head.classifier_.decision_function(expected), rtol=1e-4)
    # the voter's evidence, read off its one pass over the rows' images, is the head's own pair probability
    voter = VotingVerifier(FrozenEstimator(head), voting="normalized", compare_ink=False).fit(rows, labels)
    probability, per_reference = voter.verify(rows)
    np.testing.assert_allclose(probability, voter.predict_proba(rows)[:, 1])
    np.testing.assert_allclose(per_reference.ravel(), head.predict_proba(VotingVerifier._as_pairs(rows))[:, 1],
                               rtol=1e-5)
    np.testing.assert_allclose(voter.reference_probabilities(rows), per_reference, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\['texture'\] missing"):
        head.proba_from_embeddings(E)  # the embedding alone is not what this head compares
    with pytest.raises(ValueError, match="extra_views must name"):
        LogisticSiameseRegression(FrozenEstimator(clf.embedder_), extra_views=("stage3",)).fit(pairs, y)


def test_a_pair_head_with_the_local_view_adds_the_scaled_local_match_distance(voter_rows, pair_data):
    clf, rows, labels = voter_rows
    _, _, X, y = pair_data
    pairs = PreprocessImage(size=SIZE).transform(X)
    head = LogisticSiameseRegression(FrozenEstimator(clf.embedder_), extra_views=("texture", "local"),
                                     random_state=0).fit(pairs, y)
    assert head.classifier_.n_features_in_ == 2 * 16 + 3
    views = head.embed_views(pairs.reshape(-1, *pairs.shape[2:]))
    E, T = (views[name].reshape(len(pairs), 2, -1) for name in ("embedding", "texture"))
    grids = torch.as_tensor(views["local"])
    reference, questioned = grids[0::2], grids[1::2]
    found_in_questioned, found_in_reference = local_best_matches(reference, questioned)  # each way
    local = np.column_stack([1 - (found_in_questioned * reference.norm(dim=3)).sum((1, 2)),
                             1 - (found_in_reference * questioned.norm(dim=3)).sum((1, 2))])
    np.testing.assert_allclose(local.mean(axis=1), local_match_distance(reference, questioned), rtol=1e-5)
    first, second = np.arange(0, len(grids), 2), np.arange(1, len(grids), 2)
    np.testing.assert_allclose(local_pair_match_distances(views["local"], first, second), local, rtol=1e-5)
    np.testing.assert_allclose(local_pair_distances(views["local"], first, second, chunk=5), local.mean(axis=1),
                               rtol=1e-5)
    expected = np.hstack([pair_features(E), -10.0 * np.linalg.norm(T[:, 0] - T[:, 1], axis=1)[:, None],
                          -10.0 * local])
    np.testing.assert_allclose(head.decision_function(pairs), head.classifier_.decision_function(expected), rtol=1e-4)
    # pairs as positions among images held once, and pairs gathered two images each, score alike
    images = pairs.reshape(-1, *pairs.shape[2:])
    at = np.arange(2 * len(pairs)).reshape(-1, 2)
    by_position = head.proba_at(head.head_views(images), at)
    np.testing.assert_allclose(by_position, head.predict_proba(pairs)[:, 1], rtol=1e-5)
    np.testing.assert_allclose(by_position, head.proba_from_embeddings(take_rows(head.head_views(images), at)),
                               rtol=1e-5)
    # a voter's evidence from a head with the local view: the head's own pair probabilities
    voter = VotingVerifier(FrozenEstimator(head), voting="normalized", extra_views=("local_set",)).fit(rows, labels)
    probability, per_reference = voter.verify(rows)
    np.testing.assert_allclose(per_reference.ravel(), head.predict_proba(VotingVerifier._as_pairs(rows))[:, 1],
                               rtol=1e-5)
    np.testing.assert_allclose(voter.reference_probabilities(rows), per_reference, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\['local'\] missing"):
        head.proba_from_embeddings({"embedding": E, "texture": T})


def test_verify_gives_the_probability_and_the_evidence_from_one_embedding(voter_rows):
    clf, rows, labels = voter_rows
    ink = np.full((8, 4, 2), 1000.0)
    ink[4:, 0, 0] *= [3.0, 0.3, 2.5, 0.4]
    X = {"images": rows, "ink": ink}
    for voting in ("soft", "hard", "normalized"):
        voter = VotingVerifier(FrozenEstimator(clf), voting=voting, compare_ink=True).fit(X, labels)
        expected = voter.predict_proba(X)[:, 1], voter.reference_probabilities(X)
        calls = []
        with pytest.MonkeyPatch.context() as patch:
            for method in ("embed", "embed_views"):
                original = getattr(clf, method)
                patch.setattr(clf, method, lambda images, original=original: calls.append(len(images)) or original(images))
            probability, per_reference = voter.verify(X)
        assert calls == [3 + 8]  # each distinct image embedded once, for both outputs
        np.testing.assert_allclose(probability, expected[0], rtol=1e-6)
        np.testing.assert_allclose(per_reference, expected[1], rtol=1e-5)
        assert per_reference.shape == (8, 3)


def test_voter_takes_each_image_once_and_the_rows_as_positions(voter_rows):
    clf, rows, labels = voter_rows  # 8 rows (questioned, the same 3 references)
    pool = np.concatenate([rows[:, 0], rows[0, 1:]])  # the 8 questioned, then the 3 references
    index = np.column_stack([np.arange(8), np.tile(8 + np.arange(3), (8, 1))])
    ink = np.random.default_rng(0).uniform(500, 1500, size=(11, 2))
    as_rows, as_pool = {"images": rows, "ink": ink[index]}, {"images": pool, "ink": ink, "rows": index}
    for voting in ("soft", "hard", "normalized"):
        voter = VotingVerifier(FrozenEstimator(clf), voting=voting, compare_ink=True).fit(as_pool, labels)
        same = VotingVerifier(FrozenEstimator(clf), voting=voting, compare_ink=True).fit(as_rows, labels)
        np.testing.assert_allclose(voter.predict_proba(as_pool), same.predict_proba(as_rows), rtol=1e-5)
        np.testing.assert_allclose(voter.reference_probabilities(as_pool), same.reference_probabilities(as_rows),
                                   rtol=1e-5)
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        original = clf.embed_views
        patch.setattr(clf, "embed_views", lambda images: calls.append(len(images)) or original(images))
        voter.predict_proba({**as_pool, "images": np.concatenate([pool, pool[:5]]), "ink": np.tile(ink, (2, 1))[:16]})
    assert calls == [11]  # images the rows do not use are not embedded
    head = LogisticSiameseRegression(FrozenEstimator(clf.embedder_))  # fitted on the rows' pairs, either form
    np.testing.assert_allclose(VotingVerifier(head).fit({"images": pool, "rows": index}, labels).estimator_
                               .classifier_.coef_, VotingVerifier(head).fit(rows, labels).estimator_.classifier_.coef_)
    with pytest.raises(ValueError, match="outside 0..10"):
        voter.predict_proba({**as_pool, "rows": index + 1})
    with pytest.raises(ValueError, match="integer positions"):
        voter.predict_proba({**as_pool, "rows": index.astype(float)})
    with pytest.raises(ValueError, match=r"\(p, 1, H, W\)"):
        voter.predict_proba({**as_pool, "images": rows})
    with pytest.raises(ValueError, match="do not match 11 images"):
        voter.predict_proba({**as_pool, "ink": ink[:5]})
    with pytest.raises(ValueError, match="4 labels for 8 rows"):
        voter.fit(as_pool, labels[:4])


def test_pair_classifier_takes_each_image_once_and_the_pairs_as_positions(voter_rows):
    clf, rows, _ = voter_rows
    pool = np.concatenate([rows[:, 0], rows[0, 1:]])  # 11 distinct images
    index = np.random.default_rng(0).integers(0, 11, size=(30, 2))
    y = np.arange(30) % 2
    ink = np.random.default_rng(1).uniform(500, 1500, size=(11, 2))
    as_pool, as_pairs = {"images": pool, "ink": ink, "rows": index}, {"images": pool[index], "ink": ink[index]}
    head = LogisticSiameseRegression(FrozenEstimator(clf.embedder_), compare_ink=True, random_state=0)
    pooled, paired = clone(head).fit(as_pool, y), clone(head).fit(as_pairs, y)
    np.testing.assert_allclose(pooled.classifier_.coef_, paired.classifier_.coef_, rtol=1e-5)
    np.testing.assert_allclose(pooled.predict_proba(as_pool), paired.predict_proba(as_pairs), rtol=1e-5)
    assert pooled.input_shape_ == paired.input_shape_ == pool.shape[1:]
    with pytest.raises(ValueError, match="expected pairs"):
        pooled.predict_proba({**as_pool, "rows": np.column_stack([index, index[:, :1]])})
    with pytest.raises(ValueError, match="needs the images' ink measures"):
        pooled.predict_proba({"images": pool, "rows": index})


def test_normalized_voting_can_compare_the_amount_of_ink(voter_rows):
    clf, rows, labels = voter_rows
    ink = np.full((8, 4, 2), 1000.0)  # ink pixels and stroke width of each image
    ink[:, 1:, 0] *= [0.9, 1.0, 1.1]
    ink[4:, 0, 0] *= [3.0, 0.3, 2.5, 0.4]  # the forgeries hold far more or far less ink than the references
    expected = np.abs(np.log(ink[:, 0]) - np.log(ink[:, 1:]).mean(axis=1))
    np.testing.assert_allclose(ink_difference(ink), expected)
    np.testing.assert_allclose(ink_difference(ink[:, :, 0]), expected[:, :1])  # one measure
    voter = VotingVerifier(FrozenEstimator(clf), voting="normalized", compare_ink=True, extra_views=())
    voter.fit({"images": rows, "ink": ink}, labels)
    features = np.column_stack([np.log(voter.distance_ratio(rows)), expected])
    proba = voter.predict_proba({"images": rows, "ink": ink})
    np.testing.assert_allclose(proba, voter.calibrator_.predict_proba(features))
    assert voter.calibrator_.coef_[0, 1] < 0  # more ink difference, less genuine
    more_ink = ink.copy()
    more_ink[:4, 0, 0] *= 3  # the genuine rows, as if written with another pen
    assert np.all(voter.predict_proba({"images": rows, "ink": more_ink})[:4, 1] < proba[:4, 1])
    np.testing.assert_array_equal(voter.predict({"images": rows, "ink": ink}), proba[:, 1] >= 0.5)
    with pytest.raises(ValueError, match="needs the images' ink measures"):
        voter.predict_proba(rows)
    with pytest.raises(ValueError, match="ink must be positive"):
        voter.predict_proba({"images": rows, "ink": -ink})
    with pytest.raises(ValueError, match="do not match"):
        voter.predict_proba({"images": rows, "ink": ink[:3]})
    # without compare_ink the measures are ignored
    plain = VotingVerifier(FrozenEstimator(clf), voting="normalized").fit(rows, labels)
    np.testing.assert_array_equal(plain.predict_proba({"images": rows, "ink": more_ink}), plain.predict_proba(rows))


def test_the_pair_classifier_can_compare_ink_inside_a_pipeline(pair_data):
    data, pairs, X, y = pair_data
    pre = PreprocessImage(size=SIZE, measure_ink=True)
    measured = pre.transform(X)
    assert set(measured) == {"images", "ink"} and measured["ink"].shape == (len(X), 2, 2)
    net = FrozenEstimator(tiny_net().fit(*pairs_to_targets(measured["images"], y)))
    inked = LogisticSiameseRegression(net, compare_ink=True, extra_views=(), random_state=0).fit(measured, y)
    plain = LogisticSiameseRegression(net, extra_views=(), random_state=0).fit(measured, y)  # the measures are ignored
    assert inked.classifier_.coef_.shape[1] == plain.classifier_.coef_.shape[1] + 2
    E = inked.embed(measured["images"])
    features = np.hstack([pair_features(E), inked.ink_scaling * ink_difference(measured["ink"])])
    np.testing.assert_allclose(inked.predict_proba(measured), inked.classifier_.predict_proba(features), rtol=1e-6)
    np.testing.assert_allclose(inked.proba_from_embeddings(E, ink=measured["ink"]),
                               inked.predict_proba(measured)[:, 1], rtol=1e-6)
    with pytest.raises(ValueError, match="measure_ink=True"):
        inked.predict_proba(measured["images"])
    pipe = Pipeline([("preprocess", pre),
                     ("verify", LogisticSiameseRegression(net, compare_ink=True, extra_views=()))]).fit(X, y)
    np.testing.assert_allclose(pipe.predict_proba(X), inked.predict_proba(measured), rtol=1e-6)
    assert confusion_matrix(y, pipe.predict(X)).sum() == len(y)
    # a voter over the ink-comparing pair classifier: every reference's pair carries its measures
    rows = pre.transform([[q, *data.images[:3]] for q in data.images[3:7]])
    voter = VotingVerifier(FrozenEstimator(inked)).fit(rows, np.ones(4))
    per_reference = voter.reference_probabilities(rows)
    first = {"images": rows["images"][:, [1, 0]], "ink": rows["ink"][:, [1, 0]]}
    np.testing.assert_allclose(per_reference[:, 0], inked.predict_proba(first)[:, 1], rtol=1e-5)


def test_labels_are_validated_and_other_image_sizes_refused(pair_data):
    _, _, X, y = pair_data
    Xp = PreprocessImage(size=SIZE).transform(X)
    with pytest.raises(ValueError, match="binary labels"):
        LogisticSiameseRegression(tiny_net()).fit(Xp, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="binary labels"):
        LogisticSiameseRegression(tiny_net()).fit(Xp, np.where(y == 1, 2, 1))
    clf = LogisticSiameseRegression(tiny_net(), random_state=0).fit(Xp, y)
    assert clf.input_shape_ == (1, *SIZE)
    other = PreprocessImage(size=(40, 64)).transform(X[:3])
    with pytest.raises(ValueError, match=r"fitted on images of shape \(1, 32, 64\), got \(1, 40, 64\)"):
        clf.predict_proba(other)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        VotingVerifier(FrozenEstimator(clf)).fit(Xp[:2], [1, 1]).predict_proba(other)


_API_CHECKS = ["check_no_attributes_set_in_init", "check_parameters_default_constructible",
               "check_get_params_invariance", "check_set_params", "check_estimator_repr", "check_estimator_cloneable",
               "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimators_unfitted",
               "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order"]
_SKORCH_BY_DESIGN = {
    "check_no_attributes_set_in_init": "skorch's NeuralNet.__init__ sets history_, initialized_ and virtual_params_",
    "check_set_params": "sklearn sets every parameter to arbitrary values (callbacks=-inf, ...), which skorch rejects",
    "check_do_not_raise_errors_in_init_or_set_params": "skorch's set_params compares the new values with ==, "
                                                       "which fails for the numpy arrays this check passes",
}


@pytest.mark.parametrize("check", _API_CHECKS)
@pytest.mark.parametrize("make", [LogisticSiameseRegression, lambda: VotingVerifier(LogisticSiameseRegression()),
                                  lambda: SiameseEmbedder(module__backbone="resnet_tiny")],
                         ids=["LogisticSiameseRegression", "VotingVerifier", "SiameseEmbedder"])
def test_sklearn_api_checks_that_apply_to_image_estimators(make, check, request):
    """sklearn's API checks that need no 2-D table (``parametrize_with_checks`` generates no check at all for an
    estimator whose tags say it takes no 2-D input, as these do; the data checks feed tables, not images)."""
    import warnings

    from sklearn.utils import estimator_checks

    estimator = make()
    if isinstance(estimator, SiameseEmbedder) and check in _SKORCH_BY_DESIGN:
        request.applymarker(pytest.mark.xfail(reason=_SKORCH_BY_DESIGN[check], strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        getattr(estimator_checks, check)(type(estimator).__name__, estimator)


def test_verifiers_declare_image_input_and_binary_targets():
    for estimator in (LogisticSiameseRegression(), VotingVerifier(LogisticSiameseRegression())):
        tags = estimator.__sklearn_tags__()
        assert tags.input_tags.two_d_array is False and tags.classifier_tags.multi_class is False
        assert tags.target_tags.required is True and tags.estimator_type == "classifier"


def test_pair_classifier_embeds_a_shared_reference_once(pair_data):
    data, _, X, y = pair_data
    pre = PreprocessImage(size=SIZE)
    clf = LogisticSiameseRegression(tiny_net(), extra_views=(), random_state=0).fit(pre.transform(X), y)
    pairs = pre.transform([[data.images[0], q] for q in data.images[1:6]])  # one reference, five questioned
    expected = clf.proba_from_embeddings(np.stack([clf.embed(pairs[:, 0]), clf.embed(pairs[:, 1])], axis=1))
    seen = []
    original = clf.embedder_.transform
    clf.embedder_.transform = lambda images: seen.append(len(images)) or original(images)
    np.testing.assert_allclose(clf.predict_proba(pairs)[:, 1], expected, rtol=1e-5)
    assert seen == [6]


def test_pooled_local_grids_are_matched_within_the_pooled_reach_by_the_head_and_the_voter(voter_rows, pair_data):
    clf, rows, labels = voter_rows
    _, _, X, y = pair_data
    pairs = PreprocessImage(size=SIZE).transform(X)
    head = LogisticSiameseRegression(FrozenEstimator(clf.embedder_), extra_views=("texture", "local"),
                                     local_pooling=2, random_state=0).fit(pairs, y)
    views = head.embed_views(pairs.reshape(-1, *pairs.shape[2:]))
    E, T = (views[name].reshape(len(pairs), 2, -1) for name in ("embedding", "texture"))
    pooled = pool_local_descriptors(torch.as_tensor(views["local"]), 2).numpy()
    assert pooled.shape[1:3] == (2, 4)  # the 4 x 8 grid of 32 x 64 images
    first, second = np.arange(0, 2 * len(pairs), 2), np.arange(1, 2 * len(pairs), 2)
    local = local_pair_match_distances(pooled, first, second, reach=(2, 3))
    assert not np.allclose(local, local_pair_match_distances(views["local"], first, second), atol=1e-3)
    expected = np.hstack([pair_features(E), -10.0 * np.linalg.norm(T[:, 0] - T[:, 1], axis=1)[:, None],
                          -10.0 * local])
    np.testing.assert_allclose(head.decision_function(pairs), head.classifier_.decision_function(expected), rtol=1e-4)
    np.testing.assert_allclose(head.proba_from_embeddings(take_rows(head.head_views(pairs.reshape(-1, *pairs.shape[2:])),
                                                                    np.column_stack([first, second]))),
                               head.predict_proba(pairs)[:, 1], rtol=1e-5)
    # the voter's set-matched ratio of the pooled grids
    row_views = head.embed_views(rows.reshape(-1, *rows.shape[2:]))
    row_pooled = pool_local_descriptors(torch.as_tensor(row_views["local"]), 2).numpy()
    voter = VotingVerifier(FrozenEstimator(head), voting="normalized", extra_views=("local_set",),
                           local_pooling=2).fit(rows, labels)
    inputs = np.column_stack([np.log(voter.distance_ratio(rows)),
                              np.log(local_set_distance_ratio(row_pooled, np.arange(32).reshape(8, 4), (2, 3)))])
    np.testing.assert_allclose(voter.predict_proba(rows), voter.calibrator_.predict_proba(inputs), rtol=1e-4)
    # the evidence is the head's own pair probability, whether the voter pools as the head does (its matches
    # handed over) or not (the head matches its own grids)
    for pooling in (2, 1):
        other = VotingVerifier(FrozenEstimator(head), voting="normalized", extra_views=("local_set",),
                               local_pooling=pooling).fit(rows, labels)
        np.testing.assert_allclose(other.verify(rows)[1].ravel(),
                                   head.predict_proba(VotingVerifier._as_pairs(rows))[:, 1], rtol=1e-5)
    with pytest.raises(ValueError, match="local_pooling"):
        LogisticSiameseRegression(FrozenEstimator(clf.embedder_), local_pooling=0).fit(pairs, y)
