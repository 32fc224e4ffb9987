import warnings

import joblib
import numpy as np
import pytest

import sigest
from sigest import perform_voting
from sigest.cache import cache_images, cache_preprocessor, load_cache
from sigest.cli import main
from sigest.datasets import load_signatures, make_signatures, save_signatures
from sigest.nn import InkJitter
from sigest.preprocessing import PreprocessImage


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_signatures(n_writers=7, n_genuine=8, n_forged=2, image_size=(60, 120), random_state=0)
    save_signatures(data, root / "data")
    model = root / "model.safetensors"
    status = main(["train", str(root / "data"), "--out", str(model), "--epochs", "1", "--size", "32", "64",
                   "--test-writers", "w005", "w006", "--quiet"])
    assert status == 0
    return root, model


def test_train_saves_a_pipeline_scoring_path_pairs(trained):
    root, model_path = trained
    model = sigest.load(model_path)
    table = load_signatures(root / "data")
    X = table[["path", "path"]].to_numpy()[:4]
    proba = model.predict_proba(X)
    assert proba.shape == (4, 2) and 0 < model[-1].threshold < 1
    whitening = model[-1].embedder_.module_.whitening
    assert not np.allclose(whitening.numpy(), np.eye(len(whitening)))  # fitted on the training writers


def test_whitening_option_takes_auto_none_or_a_shrinkage(capsys):
    from sigest.cli import build_parser

    def parse(*option):
        return build_parser().parse_args(["train", "data", "--out", "m.safetensors", *option]).whitening

    assert parse() == "auto" and parse("--whitening", "none") is None and parse("--whitening", "0.3") == 0.3
    with pytest.raises(SystemExit):
        parse("--whitening", "strong")
    assert "expected auto, none or a shrinkage in (0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("--whitening", "0")  # refused before any training, not after


def test_autocast_option_trains_in_bfloat16_and_the_safe_file_computes_in_float32(trained, tmp_path):
    root, _ = trained
    status = main(["train", str(root / "data"), "--out", str(tmp_path / "m.joblib"), "--epochs", "1",
                   "--size", "32", "64", "--autocast", "bfloat16", "--quiet"])
    assert status == 0
    model = joblib.load(tmp_path / "m.joblib")
    assert model[-1].embedder_.autocast == "bfloat16"
    assert model[-1].embedder_.local_weight == 1.0  # the local triplet loss is part of the default recipe
    sigest.save(model, tmp_path / "m.safetensors")
    assert sigest.load(tmp_path / "m.safetensors")[-1].embedder_.autocast is None


def test_ink_jitter_and_local_weight_options_reach_the_embedder(trained, tmp_path):
    root, _ = trained
    status = main(["train", str(root / "data"), "--out", str(tmp_path / "m.joblib"), "--epochs", "1",
                   "--size", "32", "64", "--ink-jitter", "0.7", "1.1", "--local-weight", "0", "--quiet"])
    assert status == 0
    embedder = joblib.load(tmp_path / "m.joblib")[-1].embedder_
    assert isinstance(embedder.augment, InkJitter) and embedder.augment.factor == (0.7, 1.1)
    assert embedder.local_weight == 0.0


def test_local_view_option_makes_the_voter_compare_the_local_view(trained, tmp_path, capsys):
    root, default_path = trained
    assert not {"local", "local_set"} & set(sigest.load(default_path).reference_voter_.extra_views)
    for pooling in ("0", "2"):  # pooling the grids needs the local view, and a positive factor
        assert main(["train", str(root / "data"), "--out", str(tmp_path / "bad.safetensors"),
                     "--local-pooling", pooling, *(["--local-view"] if pooling == "0" else [])]) == 2
        assert "--local-pooling" in capsys.readouterr().err and not (tmp_path / "bad.safetensors").exists()
    status = main(["train", str(root / "data"), "--out", str(tmp_path / "m.safetensors"), "--epochs", "1",
                   "--size", "32", "64", "--test-writers", "w005", "w006", "--local-view", "--local-pooling", "2",
                   "--quiet"])
    assert status == 0
    model = sigest.load(tmp_path / "m.safetensors")
    assert model.reference_voter_.extra_views == ("penultimate", "strips", "texture", "local_set")
    assert model.reference_voter_.local_pooling == model[-1].local_pooling == 2
    assert model[-1].embedder_.module_.local_mean.abs().sum() > 0  # centred by the training writers' whitening
    table = load_signatures(root / "data")
    genuine = table[table["genuine"] & (table["writer"] == "w005")]["path"].tolist()
    rows = model[0].set_params(pool_rows=True).transform(np.array([[genuine[0], *genuine[1:4]]], dtype=object))
    assert 0 <= model.reference_voter_.predict_proba(rows)[0, 1] <= 1


def test_evaluate_writes_report(trained, capsys):
    root, model = trained
    status = main(["evaluate", str(model), str(root / "data"), "--writers", "w005", "w006",
                   "--out", str(root / "report"), "--k", "1", "3"])
    assert status == 0
    assert "EER (global threshold)" in capsys.readouterr().out
    assert (root / "report" / "roc.png").is_file()


def test_verify_exit_status_says_the_verdict(trained, capsys):
    root, model = trained
    refs = sorted(str(p) for p in (root / "data" / "w005" / "genuine").glob("*.png"))
    forged = sorted(str(p) for p in (root / "data" / "w005" / "forged").glob("*.png"))
    loaded = sigest.load(model)
    assert loaded.reference_voter_.voting == "normalized"  # train fitted it on its validation writer
    # training measured the ink, so the pair head and the voter compare it and the pipeline measures it
    assert loaded[0].measure_ink and loaded[-1].compare_ink and loaded.reference_voter_.compare_ink
    for options, voting, n_refs in (([], "normalized", 3), (["--voting", "soft"], "soft", 3), ([], "soft", 1)):
        status = main(["verify", str(model), "--reference", *refs[:n_refs], "--questioned", forged[0], *options])
        out = capsys.readouterr().out
        label, probability, _ = perform_voting(loaded, forged[0], refs[:n_refs], voting=voting)
        assert status == (0 if label == 1 else 1) and out.startswith("GENUINE" if label == 1 else "FORGED")
        assert f"probability_genuine={probability:.4f}" in out and f"voting={voting}" in out
    assert main(["verify", str(model), "--reference", refs[0], "--questioned", forged[0], "--voting", "normalized"]) == 2
    assert "at least 2 --reference" in capsys.readouterr().err


def test_verify_takes_several_questioned_signatures_at_once(trained, tmp_path, capsys):
    root, model = trained
    refs = sorted(str(p) for p in (root / "data" / "w005" / "genuine").glob("*.png"))
    forged = sorted(str(p) for p in (root / "data" / "w005" / "forged").glob("*.png"))
    loaded = sigest.load(model)
    questioned = [refs[3], *forged[:2], refs[4]]
    for voting in ("normalized", "soft", "hard"):
        status = main(["verify", str(model), "--reference", *refs[:3], "--questioned", *questioned, "--voting", voting])
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 4
        labels = []
        for line, path in zip(lines, questioned):  # each line as verifying that one alone says
            label, probability, evidence = perform_voting(loaded, path, refs[:3], voting=voting)
            labels.append(label)
            assert line.startswith("GENUINE" if label == 1 else "FORGED") and line.endswith(f"questioned={path}")
            assert f"probability_genuine={probability:.4f}" in line
            assert f"per_reference={np.round(evidence, 4).tolist()}" in line
        assert status == (0 if all(labels) else 1)
    assert main(["verify", str(model), "--reference", *refs[:3], "--questioned", *questioned[:2],
                 "--report", str(tmp_path / "r.png")]) == 2
    assert "a single --questioned" in capsys.readouterr().err


def test_bad_input_is_one_line_and_status_2(trained, tmp_path, capsys):
    root, model = trained
    refs = [str(next((root / "data" / "w005" / "genuine").glob("*.png")))]
    assert main(["verify", str(model), "--reference", *refs, "--questioned", str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sigest: error: image file not found") and err.count("\n") == 1
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    assert main(["verify", str(junk), "--reference", *refs, "--questioned", refs[0]]) == 2
    assert "not a sigest model" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(model), str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(model), "--questioned", refs[0]])
    assert exit_info.value.code == 2


def test_pickle_models_warn_and_safe_models_do_not(trained, tmp_path, capsys):
    root, model = trained
    refs = sorted(str(p) for p in (root / "data" / "w005" / "genuine").glob("*.png"))
    main(["verify", str(model), "--reference", *refs[:2], "--questioned", refs[2]])
    assert capsys.readouterr().err == ""
    pickled = tmp_path / "model.joblib"
    joblib.dump(sigest.load(model), pickled)
    main(["verify", str(pickled), "--reference", *refs[:2], "--questioned", refs[2]])
    err = capsys.readouterr().err
    assert "pickle (joblib) file, which runs code" in err and err.count("\n") == 1


def test_ctrl_c_during_training_saves_nothing_and_keeps_the_old_model(trained, monkeypatch, capsys):
    from sigest.callbacks import WriterEER

    root, model = trained
    before = model.read_bytes()

    def interrupt(self, net, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(WriterEER, "on_epoch_end", interrupt)
    status = main(["train", str(root / "data"), "--out", str(model), "--epochs", "3", "--size", "32", "64", "--quiet"])
    assert status == 130 and "interrupted" in capsys.readouterr().err
    assert model.read_bytes() == before
    assert not list(model.parent.glob(f".{model.name}.*")), "no temporary file left behind"


def test_bad_output_paths_fail_before_any_work(trained, tmp_path, capsys):
    root, _ = trained
    status = main(["train", str(root / "data"), "--out", str(tmp_path), "--epochs", "1", "--quiet"])
    assert status == 2 and "is a folder" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    status = main(["prepare", str(root / "data"), "--out", str(blocker / "cache.npz"), "--quiet"])
    assert status == 2 and "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("option, params", [(["--binarize"], {"binarize": True}),
                                            (["--normalize-ink"], {"normalize_ink": 95.0})])
def test_prepare_preprocessing_options_are_kept_in_the_cache(trained, tmp_path, capsys, option, params):
    root, _ = trained
    status = main(["prepare", str(root / "data"), "--out", str(tmp_path / "c.npz"), "--size", "32", "64",
                   *option, "--jobs", "1", "--quiet"])
    assert status == 0 and "preprocessed" in capsys.readouterr().out
    cache = load_cache(tmp_path / "c.npz")
    preprocessor = cache_preprocessor(cache)
    assert {k: getattr(preprocessor, k) for k in params} == params and cache.images.shape[1:] == (32, 64)
    paths = cache.table["path"].tolist()[:4]
    expected = PreprocessImage((32, 64), **params).transform(paths)
    np.testing.assert_allclose(cache_images(cache, [0, 1, 2, 3]), expected, atol=0.5 / 255 + 1e-6)
    assert not np.allclose(PreprocessImage((32, 64)).transform(paths), expected, atol=0.05)


def test_verify_report_draws_the_evidence(trained, tmp_path, monkeypatch, capsys):
    root, model = trained
    refs = sorted(str(p) for p in (root / "data" / "w005" / "genuine").glob("*.png"))
    report = tmp_path / "evidence.png"
    preprocessed = []
    measured = PreprocessImage.preprocess_measured
    monkeypatch.setattr(PreprocessImage, "preprocess_measured",
                        lambda self, item: preprocessed.append(item) or measured(self, item))
    status = main(["verify", str(model), "--reference", *refs[:3], "--questioned", refs[3], "--report", str(report)])
    assert status in (0, 1) and report.read_bytes()[:4] == b"\x89PNG"
    assert len(preprocessed) == 4  # each image once, for the verdict and the drawing alike
    status = main(["verify", str(model), "--reference", *refs[:3], "--questioned", refs[3], "--report", str(tmp_path)])
    assert status == 2 and "is a folder" in capsys.readouterr().err


def test_evaluate_takes_an_optional_model_and_refuses_a_file_as_report_folder(trained, tmp_path, capsys):
    root, model = trained
    report_file = tmp_path / "report.txt"
    report_file.write_text("keep me")
    status = main(["evaluate", str(model), str(root / "data"), "--writers", "w005", "--out", str(report_file)])
    assert status == 2 and "is a file" in capsys.readouterr().err and report_file.read_text() == "keep me"
    assert main(["evaluate", str(root / "data"), "--writers", "w005", "w006", "--k", "1"]) == 0
    assert "EER (global threshold)" in capsys.readouterr().out  # scored by the shipped sigest-base


def test_calibrate_writes_a_model_with_thresholds_from_the_given_writers(trained, tmp_path, capsys):
    from sigest.training import calibrate

    root, model_path = trained
    out = tmp_path / "calibrated.safetensors"
    status = main(["calibrate", str(model_path), str(root / "data"), "--writers", "w005", "w006", "--out", str(out),
                   "--k", "3"])
    assert status == 0 and "calibrated on 2 writers" in capsys.readouterr().out
    original, calibrated = sigest.load(model_path), sigest.load(out)
    table = load_signatures(root / "data")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expected = calibrate(original, table[table["writer"].isin(["w005", "w006"])], k=3)
    assert not [w for w in caught if "trained or validated on" in str(w.message)]
    with pytest.warns(UserWarning, match="2 of the calibration writers .* trained or validated on"):
        calibrate(original, table[table["writer"].isin(["w001", "w002"])], k=3)  # the file lists them
    assert calibrated[-1].threshold == pytest.approx(expected[-1].threshold, rel=1e-5)
    assert calibrated.reference_voter_.threshold == pytest.approx(expected.reference_voter_.threshold, rel=1e-5)
    assert calibrated.sigest_info_["info"]["calibrated_on"]["writers"] == ["w005", "w006"]
    assert sigest.load(model_path)[-1].threshold == original[-1].threshold  # the input file is left alone
    assert main(["calibrate", str(model_path), str(root / "data"), "--writers", "w099", "--out", str(out)]) == 2
    assert "w099" in capsys.readouterr().err
