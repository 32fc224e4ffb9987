"""Safe model files: a round trip that changes nothing, and files that cannot run code."""

import json
import pickle

import numpy as np
import pytest
from safetensors.numpy import save_file

import sigest
from sigest import LogisticSiameseRegression, VotingVerifier, make_verifier
from sigest.cli import main
from sigest.datasets import make_pairs
from sigest.persistence import FORMAT_VERSION, ModelFormatError, load, read_metadata, save

SIZE = (32, 64)


@pytest.fixture(scope="module")
def fitted(small_signatures):
    pairs = make_pairs(small_signatures.table, protocol="balanced", forgeries="both", n_per_writer=6, random_state=0)
    X = pairs[["reference", "questioned"]].to_numpy()
    model = make_verifier(size=SIZE, max_epochs=1, embedding_dim=16, random_state=0).fit(X, pairs["label"])
    return model.set_params(verifier__threshold=0.42), X


class _Payload:
    """Unpickling this writes a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_gives_the_same_probabilities_and_threshold(fitted, tmp_path):
    model, X = fitted
    path = save(model, tmp_path / "model.safetensors", info={"data": "synthetic"})
    loaded = load(path, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert loaded[-1].threshold == 0.42 and loaded[0].get_params() == model[0].get_params()
    assert loaded.sigest_info_["info"] == {"data": "synthetic"}
    assert loaded.sigest_info_["network"]["backbone"] == "resnet_tiny"
    assert not list(tmp_path.glob(".*.tmp")), "written atomically, nothing left behind"


def test_an_ink_comparing_head_round_trips_with_its_scaling(fitted, tmp_path):
    from sklearn.frozen import FrozenEstimator

    from sigest.training import verifier_pipeline

    model, X = fitted
    labels = np.arange(len(X)) % 2
    ink_model = verifier_pipeline(model[0].set_params(measure_ink=True),
                                  LogisticSiameseRegression(FrozenEstimator(model[-1].embedder_), compare_ink=True,
                                                            ink_scaling=3.0, random_state=0))
    try:
        ink_model.fit(X, labels)
        path = save(ink_model, tmp_path / "ink.safetensors")
        expected = ink_model.predict_proba(X)
    finally:
        model[0].set_params(measure_ink=False)  # the shared fixture stays as it was
    loaded = load(path, device="cpu")
    assert loaded[-1].ink_scaling == 3.0 and loaded[-1].compare_ink
    np.testing.assert_allclose(loaded.predict_proba(X), expected, rtol=1e-5, atol=1e-6)


def test_the_whitening_round_trips_and_files_without_one_load_unwhitened(fitted, small_signatures, tmp_path):
    import torch
    from safetensors.numpy import load_file

    from sigest.training import fit_whitening

    model, X = fitted
    raw = model.predict_proba(X)
    table = small_signatures.table
    own = table[table["genuine"]]
    try:
        fit_whitening(model[-1].embedder_, model[0].transform(own["image"].tolist()), own["writer"].to_numpy())
        whitened = model.predict_proba(X)
        path = save(model, tmp_path / "whitened.safetensors")
    finally:
        model[-1].embedder_.module_.set_whitening(None).set_view_whitening(None, None)  # the fixture stays as it was
    assert not np.allclose(whitened, raw)
    loaded = load(path, device="cpu")
    module = loaded[-1].embedder_.module_
    assert not torch.equal(module.whitening, torch.eye(16))
    assert not torch.equal(module.penultimate_whitening, torch.eye(len(module.penultimate_whitening)))
    assert not torch.equal(module.strip_whitening[0], torch.eye(16))
    assert not torch.equal(module.texture_whitening, torch.eye(len(module.texture_whitening)))
    assert module.local_mean.abs().sum() > 0
    np.testing.assert_allclose(loaded.predict_proba(X), whitened, rtol=1e-5, atol=1e-6)
    tensors = load_file(str(path))
    for name in ("whitening", "penultimate_whitening", "strip_whitening", "texture_whitening", "local_mean"):
        del tensors[f"embedder.{name}"]  # as files written before whitening existed
    save_file(tensors, tmp_path / "old.safetensors", metadata={"sigest": json.dumps(read_metadata(path))})
    old = load(tmp_path / "old.safetensors", device="cpu")
    np.testing.assert_allclose(old.predict_proba(X), raw, rtol=1e-5, atol=1e-6)


def test_a_pair_head_with_extra_views_round_trips(fitted, tmp_path):
    import copy

    from sklearn.frozen import FrozenEstimator

    model, X = fitted
    textured = copy.deepcopy(model)
    textured[-1].set_params(embedder=FrozenEstimator(textured[-1].embedder_), extra_views=("texture", "local"),
                            view_scaling=5.0, local_pooling=2)
    labels = model.predict(X)  # any labels of both kinds: only the head is fitted, on the trained network
    labels[:2] = [0, 1]
    textured[-1].fit(textured[0].transform(X), labels)
    assert textured[-1].classifier_.n_features_in_ == 2 * 16 + 3
    loaded = load(save(textured, tmp_path / "textured.safetensors"), device="cpu")
    assert loaded[-1].extra_views == ("texture", "local") and loaded[-1].view_scaling == 5.0
    assert loaded[-1].local_pooling == 2
    np.testing.assert_allclose(loaded.predict_proba(X), textured.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_the_distance_ratio_voter_round_trips(fitted, small_signatures, tmp_path):
    from sigest.training import fit_reference_voter

    model, _ = fitted
    table = small_signatures.table
    images, ink = model[0].transform_with_ink(list(table["image"]))
    at = np.array([[3, 0, 1, 2], [9, 0, 1, 2], [4, 5, 6, 7]])
    default = ("penultimate", "strips", "texture")
    for with_ink, views, pooling in ((None, default, 1), (ink, (*default, "local"), 2)):
        model.reference_voter_ = fit_reference_voter(model[-1], table, images, ink=with_ink, k=3, extra_views=views,
                                                     local_pooling=pooling)
        try:
            if with_ink is not None:
                with pytest.raises(ValueError, match="does not measure it"):
                    save(model, tmp_path / "voter.safetensors")
                model.set_params(preprocess__measure_ink=True)
            path = save(model, tmp_path / "voter.safetensors")
        finally:
            voter = model.__dict__.pop("reference_voter_")  # the shared fixture stays as it was
            model.set_params(preprocess__measure_ink=False)
        loaded = load(path, device="cpu")
        twin = loaded.reference_voter_
        assert twin.voting == "normalized" and twin.n_references_ == 3 and twin.threshold == voter.threshold
        assert twin.get_params()["C"] == voter.C == VotingVerifier(None).C
        assert twin.compare_ink == voter.compare_ink == loaded[0].measure_ink == (with_ink is not None)
        assert twin.extra_views == voter.extra_views == views and twin.local_pooling == voter.local_pooling == pooling
        X = images[at] if with_ink is None else {"images": images[at], "ink": ink[at]}
        np.testing.assert_allclose(twin.predict_proba(X), voter.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert "reference_voter" not in read_metadata(save(model, tmp_path / "plain.safetensors"))


def test_format_1_files_load_and_their_voter_scores_by_the_embedding_alone(fitted, small_signatures, tmp_path):
    from safetensors.numpy import load_file
    from sklearn.frozen import FrozenEstimator

    model, _ = fitted
    images = model[0].transform(list(small_signatures.table["image"]))
    rows = images[np.array([[3, 0, 1, 2], [9, 0, 1, 2], [4, 5, 6, 7], [8, 5, 6, 7]])]
    model.reference_voter_ = VotingVerifier(FrozenEstimator(model[-1]), voting="normalized",
                                            extra_views=()).fit(rows, [1, 0, 1, 0])
    try:
        path = save(model, tmp_path / "new.safetensors")
    finally:
        voter = model.__dict__.pop("reference_voter_")  # the shared fixture stays as it was
    document = read_metadata(path)
    assert document["format_version"] == FORMAT_VERSION == 7
    document["format_version"] = 1  # as sigest wrote it before the views: no view whitening, no extra views
    del document["reference_voter"]["extra_views"], document["head"]["extra_views"], document["head"]["view_scaling"]
    del document["reference_voter"]["local_pooling"], document["head"]["local_pooling"]
    views = ("penultimate_whitening", "strip_whitening", "texture_whitening", "local_mean")
    tensors = {k: v for k, v in load_file(str(path)).items() if not k.endswith(views)}
    save_file(tensors, tmp_path / "v1.safetensors", metadata={"sigest": json.dumps(document)})
    old = load(tmp_path / "v1.safetensors", device="cpu")
    assert old.reference_voter_.extra_views == ()
    np.testing.assert_allclose(old.reference_voter_.predict_proba(rows), voter.predict_proba(rows), rtol=1e-5)


def test_a_planted_pickle_does_not_run(fitted, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFormatError, match="not a sigest model"):
        load(evil)
    assert main(["verify", str(evil), "--reference", "a.png", "--questioned", "b.png"]) == 2
    # a real safetensors file whose metadata smuggles a pickle is read as text, never unpickled
    model, _ = fitted
    path = save(model, tmp_path / "ok.safetensors")
    document = read_metadata(path)
    document["info"] = {"payload": pickle.dumps(_Payload(marker)).hex()}
    from safetensors.numpy import load_file

    save_file(load_file(str(path)), tmp_path / "smuggled.safetensors", metadata={"sigest": json.dumps(document)})
    load(tmp_path / "smuggled.safetensors")
    assert not marker.exists()


def test_foreign_and_future_files_give_one_clear_error(fitted, tmp_path):
    junk = tmp_path / "random.safetensors"
    junk.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ModelFormatError, match="not a sigest model"):
        load(junk)
    model, _ = fitted
    path = save(model, tmp_path / "model.safetensors")
    document = read_metadata(path)
    document["format_version"] = FORMAT_VERSION + 1
    document["versions"]["sigest"] = "9.9.9"
    from safetensors.numpy import load_file

    save_file(load_file(str(path)), tmp_path / "future.safetensors", metadata={"sigest": json.dumps(document)})
    with pytest.raises(ModelFormatError, match=r"sigest 9\.9\.9.*this sigest"):
        load(tmp_path / "future.safetensors")


def test_the_shipped_verifier_loads_and_scores_path_pairs(small_signatures, tmp_path):
    assert sigest.list_pretrained() == ["sigest-base", "sigest-base-fast"]
    model = sigest.pretrained("sigest-base")
    meta = model.sigest_info_
    assert meta["preprocess"]["params"]["size"] == [150, 220] and 0 < model[-1].threshold < 1
    from sigest.pretrained import PretrainedVerifier as card
    assert card.SIGEST_BASE.value.meta["input_size"] == tuple(model[0].size)
    assert abs(card.SIGEST_BASE.value.meta["threshold"] - model[-1].threshold) < 1e-3
    voter = model.reference_voter_
    assert voter.extra_views == ("penultimate", "strips", "texture", "local_set")
    assert voter.calibrator_.n_features_in_ == 7
    assert model[-1].embedder_.module_.local_mean.abs().sum() > 0  # the local view centred on the training images
    assert model[-1].extra_views == ("texture", "local") and model[-1].classifier_.n_features_in_ == 2 * 128 + 3 + 2
    assert f"threshold {voter.threshold:.3f}" in card.SIGEST_BASE.value.meta["reference_voter"]
    assert len(meta["info"]["valid_writers"]) > 10 and not set(meta["info"]["valid_writers"]) & set(
        meta["info"]["train_writers"])
    images = list(small_signatures.images[:3])
    proba = model.predict_proba([[images[0], images[1]], [images[0], images[0]]])
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1)
    assert proba[1, 1] > model[-1].threshold, "a signature compared with itself is accepted"
    with pytest.raises(ValueError, match="unknown pretrained verifier"):
        sigest.pretrained("nope")


def test_the_shipped_verifier_takes_rows_of_paths_as_a_pool(small_signatures, tmp_path):
    from conftest import write_png

    paths = [str(write_png(tmp_path / f"{i}.png", im)) for i, im in enumerate(small_signatures.images[:8])]
    rows = [[q, *paths[:4]] for q in paths[4:]]  # (questioned, the same 4 references)
    model = sigest.pretrained("sigest-base")
    gathered = model.reference_voter_.predict_proba(model[:-1].transform(rows))
    pair_proba = model.predict_proba([row[:2] for row in rows])
    model[0].set_params(pool_rows=True)
    X = model[:-1].transform(rows)
    assert X["images"].shape[0] == 8 and X["rows"].shape == (4, 5)  # each file once
    np.testing.assert_allclose(model.reference_voter_.predict_proba(X), gathered, rtol=1e-5)
    np.testing.assert_allclose(model.predict_proba([row[:2] for row in rows]), pair_proba, rtol=1e-5)


def test_the_fast_verifier_is_sigest_base_matching_pooled_grids(small_signatures, tmp_path, capsys):
    import torch

    from conftest import write_png
    from sigest.pretrained import PretrainedVerifier as card

    base, fast = sigest.pretrained("sigest-base", device="cpu"), sigest.pretrained("sigest-base-fast", device="cpu")
    for (name, weight), (_, same) in zip(base[-1].embedder_.module_.state_dict().items(),
                                         fast[-1].embedder_.module_.state_dict().items()):
        assert torch.equal(weight, same), name  # one network
    assert base[-1].local_pooling == base.reference_voter_.local_pooling == 1
    assert fast[-1].local_pooling == fast.reference_voter_.local_pooling == 2
    assert fast.reference_voter_.extra_views == base.reference_voter_.extra_views
    assert abs(card.SIGEST_BASE_FAST.value.meta["threshold"] - fast[-1].threshold) < 1e-3
    assert f"threshold {fast.reference_voter_.threshold:.3f}" in card.SIGEST_BASE_FAST.value.meta["reference_voter"]
    paths = [str(write_png(tmp_path / f"{i}.png", im)) for i, im in enumerate(small_signatures.images[:4])]
    status = main(["verify", "sigest-base-fast", "--reference", *paths[:3], "--questioned", paths[0]])
    assert status == 0 and capsys.readouterr().out.startswith("GENUINE")


def test_the_fast_verifier_decides_as_sigest_base_on_real_rows(real_data):
    """The pooled grids change few decisions: CEDAR's validation writers of the shipped models, 5 references."""
    from sigest.datasets import load_signatures, make_reference_sets

    base, fast = sigest.pretrained("sigest-base", device="cpu"), sigest.pretrained("sigest-base-fast", device="cpu")
    writers = [w for w in base.sigest_info_["info"]["valid_writers"] if w.startswith("cedar/")]
    table = load_signatures([real_data.parent / "cedar"])  # writers qualified by their data set
    table = table[table["writer"].isin(writers)].reset_index(drop=True)
    sets = make_reference_sets(table, 5, random_state=0)
    base[0].set_params(pool_rows=True)
    X = base[:-1].transform(sets[["questioned", *(f"ref_{i}" for i in range(1, 6))]].to_numpy().tolist())
    decisions = {name: model.reference_voter_.predict(X) for name, model in (("base", base), ("fast", fast))}
    label = sets["label"].to_numpy()
    agreement = np.mean(decisions["base"] == decisions["fast"])
    accuracy = {name: np.mean(d == label) for name, d in decisions.items()}
    print(f"{len(sets)} rows of {len(writers)} writers: agreement {agreement:.3f}, accuracy {accuracy}")
    # measured on all 18 validation writers (657 rows): agreement 0.995, accuracy 0.979 (base) and 0.974 (fast)
    assert len(writers) >= 5 and agreement >= 0.95 and accuracy["fast"] >= accuracy["base"] - 0.03


def test_cli_verify_uses_the_shipped_model_by_default(small_signatures, tmp_path, capsys):
    from conftest import write_png

    paths = [str(write_png(tmp_path / f"{i}.png", im)) for i, im in enumerate(small_signatures.images[:4])]
    status = main(["verify", "--reference", *paths[:3], "--questioned", paths[0]])
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("GENUINE")


def test_a_short_fine_tune_from_the_shipped_model_does_not_hurt_other_writers(real_data):
    """Fine-tune sigest-base on 6 writers it never trained on; the EER of 12 other unseen writers holds."""
    import torch

    from sigest.datasets import load_signatures
    from sigest.metrics import embedding_eer
    from sigest.training import train_verifier

    base = sigest.pretrained("sigest-base", device="cpu")
    unseen = base.sigest_info_["info"]["valid_writers"]  # never trained on (used to pick its checkpoint)
    with pytest.warns(UserWarning, match="copies"):
        table = load_signatures(sorted(real_data.parent.glob("*/")))
    table = table[table["writer"].isin(unseen)].reset_index(drop=True)
    tune_writers = [w for w in unseen if w.startswith("bhsig260")][:3] + [w for w in unseen if w.startswith("cedar")][:3]
    others = table[~table["writer"].isin(tune_writers)]
    images = base[0].transform(others["path"].tolist())

    def eer(model):
        return embedding_eer(model[-1].embed(images), others["writer"].to_numpy(), others["genuine"].to_numpy())

    before = eer(base)
    tuned = train_verifier(table[table["writer"].isin(tune_writers)], init=base, valid_writers=2, max_epochs=2,
                           lr=3e-4, writers_per_batch=4, samples_per_writer=8, progress=False, device="cpu")
    after = eer(tuned)
    print(f"EER of {others['writer'].nunique()} other unseen writers: before {before:.4f}, after {after:.4f}")
    assert tuned[0].size == (150, 220) and tuned[-1].embedder_.module__backbone == "resnet_tiny"
    # a few writers estimate a whitening badly: fine-tuning keeps the shipped model's
    assert torch.equal(tuned[-1].embedder_.module_.whitening, base[-1].embedder_.module_.whitening)
    # measured on 2 CPU cores: 0.119 before, 0.124 after at lr 3e-4 (the network of format 3, before the local
    # triplet loss: 0.155 before, 0.162 after; refitting that one's whitening on the 4 writers:
    # 0.205; before whitening existed, 0.187 at lr 1e-3 and 0.305 at 3e-3: the test bites)
    assert after <= before + 0.03, (before, after)
