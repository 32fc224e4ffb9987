"""The training pieces: preprocessed cache, validation-EER checkpoints, augmentation, losses, devices."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback, EarlyStopping

from sigest import PreprocessImage, SiameseEmbedder, embedding_targets
from sigest.cache import cache_images, cache_preprocessor, load_cache, prepare_cache
from sigest.callbacks import WeightAverage, WriterEER
from sigest.datasets import load_signatures, save_signatures
from sigest.metrics import embedding_eer, within_writer_pairs
from sigest.nn import ArcFaceLoss, InkJitter, ProxyAnchorLoss, SignatureAugment, get_loss

SIZE = (32, 64)


@pytest.fixture(scope="module")
def images_and_targets(small_signatures):
    images = PreprocessImage(size=SIZE).transform(list(small_signatures.images))
    return images, small_signatures.writer, small_signatures.genuine


def _quiet(*args):
    """A sink for skorch messages."""


def tiny_net(**params):
    return SiameseEmbedder(**{"module__backbone": "resnet_tiny", "module__embedding_dim": 16, "max_epochs": 2,
                              "random_state": 0, "device": "cpu", **params})


def test_cache_round_trip_matches_preprocessing(tmp_path, small_signatures):
    table = load_signatures(save_signatures(small_signatures, tmp_path / "data"))
    pre = PreprocessImage(size=SIZE)
    path = prepare_cache(table, tmp_path / "cache.npz", preprocessor=pre, progress=False)
    cache = load_cache(path)
    assert cache.images.shape == (len(table), *SIZE) and cache.images.dtype == np.uint8
    assert cache.table["writer"].tolist() == table["writer"].tolist()
    assert cache.table["genuine"].tolist() == table["genuine"].tolist()
    assert cache_preprocessor(cache).get_params() == pre.get_params()
    expected, ink = pre.transform_with_ink(table["path"].tolist()[:5])
    np.testing.assert_allclose(cache_images(cache, [0, 1, 2, 3, 4]), expected, atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(cache.ink[:5], ink)
    assert not list(tmp_path.glob(".cache.npz.*")), "no temporary file left behind"
    with np.load(path) as data:  # a cache written before sigest kept ink measures still loads
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if k != "ink"})
    assert load_cache(tmp_path / "old.npz").ink is None
    (tmp_path / "junk.npz").write_bytes(b"not a cache")
    with pytest.raises(ValueError, match="not a sigest cache"):
        load_cache(tmp_path / "junk.npz")


def test_cache_leaves_out_a_copy_of_a_scan_that_the_file_comparison_misses(tmp_path, small_signatures):
    from PIL import Image

    root = save_signatures(small_signatures, tmp_path / "data")
    original = sorted((root / small_signatures.writer[0] / "genuine").glob("*.png"))[0]
    with Image.open(original) as image:  # two rows shorter: other bytes, another size, the same scan
        image.crop((0, 2, image.width, image.height)).save(original.with_name("zz_copy.png"))
    table = load_signatures(root)
    assert table["path"].str.endswith("zz_copy.png").any()  # the files differ: load_signatures keeps both
    with pytest.warns(UserWarning, match="left out 1 image.*zz_copy.png"):
        cache = load_cache(prepare_cache(table, tmp_path / "c.npz", preprocessor=PreprocessImage(size=(150, 220)),
                                         progress=False))
    assert len(cache.table) == len(table) - 1 and not cache.table["path"].str.endswith("zz_copy.png").any()
    assert len(cache.images) == len(cache.ink) == len(cache.table)
    kept = prepare_cache(table, tmp_path / "all.npz", preprocessor=PreprocessImage(size=(32, 64)), progress=False,
                         drop_near_duplicates=False)
    assert len(load_cache(kept).table) == len(table)


def test_within_writer_pairs_and_embedding_eer():
    writers = np.array(["a", "a", "a", "b", "b", "b"])
    genuine = np.array([True, True, False, True, True, False])
    first, second, label = within_writer_pairs(writers, genuine)
    assert sorted(zip(first, second, label)) == [(0, 1, 1), (0, 2, 0), (1, 2, 0), (3, 4, 1), (3, 5, 0), (4, 5, 0)]
    close = np.array([[0, 0], [0, 0.1], [1, 0], [5, 5], [5, 5.1], [6, 5]], float)
    assert embedding_eer(close, writers, genuine) == 0.0
    between = np.array([[0, 0], [2, 0], [1, 0], [5, 5], [7, 5], [6, 5]], float)  # forgeries nearer than genuine
    assert embedding_eer(between, writers, genuine) == 1.0


def test_writer_eer_callback_selects_the_best_epoch_and_is_not_pickled(images_and_targets):
    images, writers, genuine = images_and_targets
    held_out = np.isin(writers, np.unique(writers)[4:])
    callback = WriterEER(images[held_out], writers[held_out], genuine[held_out])
    net = tiny_net(max_epochs=3, callbacks=[callback, EarlyStopping(monitor="valid_eer", patience=5, load_best=True,
                                                                    sink=_quiet)])
    net.fit(images[~held_out], embedding_targets(writers[~held_out], genuine[~held_out]))
    recorded = net.history[:, "valid_eer"]
    assert len(recorded) == 3 and all(0 <= e <= 1 for e in recorded)
    final = embedding_eer(net.transform(images[held_out]), writers[held_out], genuine[held_out])
    assert final == pytest.approx(min(recorded))  # load_best restored the best epoch's weights
    buffer = io.BytesIO()
    pickle.dump(net, buffer)
    loaded = pickle.loads(buffer.getvalue())
    assert [c for name, c in loaded.callbacks_ if isinstance(c, WriterEER)][0].X is None
    np.testing.assert_array_equal(clone(net).callbacks[0].X, callback.X)  # clone keeps the validation data


def test_fit_whitening_whitens_every_later_embedding_and_fine_tuning_starts_unwhitened(images_and_targets, monkeypatch):
    from sigest.nn import within_writer_whitening
    from sigest.training import fit_whitening, train_siamese_model

    images, writers, genuine = images_and_targets
    net = tiny_net().fit(images, embedding_targets(writers, genuine))
    raw = torch.as_tensor(net.transform(images))
    codes = torch.as_tensor(np.unique(writers[genuine], return_inverse=True)[1])
    assert fit_whitening(net, images[genuine], writers[genuine], shrinkage=0.3) is net
    W = within_writer_whitening(raw[genuine], codes, shrinkage=0.3)
    expected = torch.nn.functional.normalize(raw @ W, dim=1)
    np.testing.assert_allclose(net.transform(images), expected, rtol=1e-4, atol=1e-5)
    fit_whitening(net, images[genuine], writers[genuine], shrinkage=0.3)  # refitting starts from the raw embedding
    np.testing.assert_allclose(net.transform(images), expected, rtol=1e-4, atol=1e-5)
    net.module_.set_view_whitening(None, None)
    raw_views = net.transform_views(images)
    fit_whitening(net, images[genuine], writers[genuine], shrinkage=0.3)
    views = net.transform_views(images)
    P = within_writer_whitening(torch.as_tensor(raw_views["penultimate"][genuine]), codes, shrinkage=0.3)
    np.testing.assert_allclose(views["penultimate"], torch.nn.functional.normalize(
        torch.as_tensor(raw_views["penultimate"]) @ P, dim=1), rtol=1e-4, atol=1e-5)
    S = within_writer_whitening(torch.as_tensor(raw_views["strips"][genuine, 2]), codes, shrinkage=0.3)
    np.testing.assert_allclose(views["strips"][:, 2], torch.nn.functional.normalize(
        torch.as_tensor(raw_views["strips"][:, 2]) @ S, dim=1), rtol=1e-4, atol=1e-5)  # each strip its own map
    np.testing.assert_allclose(views["embedding"], expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the local view's centre: the mean descriptor over the images' positions
        raw = net.module_.eval().views(torch.as_tensor(images[genuine]), raw_local=True)["local"]
    torch.testing.assert_close(net.module_.local_mean, raw.mean((0, 1, 2)), rtol=1e-4, atol=1e-5)
    maps = [t.clone() for t in (net.module_.whitening, net.module_.penultimate_whitening, net.module_.strip_whitening,
                                net.module_.local_mean)]
    monkeypatch.setattr("sigest.training._WHITENING_CHUNK", 7)  # rows embedded in several chunks
    fit_whitening(net, images, writers, rows=np.flatnonzero(genuine), shrinkage=0.3)  # the same, without a copy
    for before, after in zip(maps, (net.module_.whitening, net.module_.penultimate_whitening,
                                    net.module_.strip_whitening, net.module_.local_mean)):
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    import pandas as pd

    table = pd.DataFrame({"writer": writers, "genuine": genuine, "image": list(images)})
    tuned = train_siamese_model(table, images=images, valid_writers=None, init=net, max_epochs=1, progress=False,
                                device="cpu", random_state=0)
    torch.testing.assert_close(tuned.module_.whitening, torch.eye(16))


@pytest.mark.parametrize("forgeries, expected", [(None, 2), (0, 0), (3, 3), (9, 6)])
def test_writer_batches_hold_k_genuine_and_the_asked_forgeries_per_writer(forgeries, expected):
    from sigest.embedder import WriterBatchSampler

    writers = np.repeat(np.arange(5), 16)
    genuine = np.tile(np.r_[np.ones(10, bool), np.zeros(6, bool)], 5)  # 10 genuine, 6 forged each
    sampler = WriterBatchSampler(embedding_targets(writers, genuine), writers_per_batch=3, samples_per_writer=4,
                                 seed=0, forgeries_per_writer=forgeries)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        batch = np.asarray(batch)
        assert len(np.unique(writers[batch])) == 3
        for w in np.unique(writers[batch]):
            mine = batch[writers[batch] == w]
            assert genuine[mine].sum() == 4 and (~genuine[mine]).sum() == expected  # at most the 6 there are
    with pytest.raises(ValueError, match="forgeries_per_writer"):
        WriterBatchSampler(embedding_targets(writers, genuine), 3, 4, seed=0, forgeries_per_writer=-1)


def test_every_epoch_draws_new_writer_batches_and_a_seed_repeats_them(images_and_targets):
    # a sampler that drew the same batches each epoch let the net memorise 16 fixed batches: on the
    # real data the training loss reached 0 and learning stopped after about 20 epochs
    from torch.utils.data import DataLoader

    from sigest.embedder import WriterBatchSampler

    writers = np.repeat(np.arange(12), 10)
    targets = embedding_targets(writers, np.ones(len(writers), bool))
    sampler = WriterBatchSampler(targets, writers_per_batch=4, samples_per_writer=2, seed=3)
    loader = DataLoader(np.arange(len(writers)), batch_sampler=sampler)  # made once per fit, as skorch does
    first, second = ([b.tolist() for b in loader] for _ in range(2))
    assert first != second
    again = WriterBatchSampler(targets, writers_per_batch=4, samples_per_writer=2, seed=3)
    assert [list(b) for b in again] == first

    images, writers, genuine = images_and_targets
    net = SiameseEmbedder(module__backbone="resnet_tiny", module__embedding_dim=8, writers_per_batch=2,
                          samples_per_writer=2, max_epochs=1, random_state=0, device="cpu").initialize()
    dataset = net.get_dataset(images, embedding_targets(writers, genuine))
    iterator = net.get_iterator(dataset, training=True)
    epochs = [[y[:, 0].tolist() for _, y in iterator] for _ in range(2)]
    assert epochs[0] != epochs[1]


def test_train_verifier_refuses_a_bad_whitening_before_training(small_signatures, monkeypatch):
    import pandas as pd

    from sigest import training

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking its arguments")

    monkeypatch.setattr(training, "train_siamese_model", no_training)
    table = pd.DataFrame({"writer": small_signatures.writer, "genuine": small_signatures.genuine,
                          "image": list(small_signatures.images)})
    for bad in (0.0, 1.5, "strong"):
        with pytest.raises(ValueError, match="whitening must be"):
            training.train_verifier(table, whitening=bad, progress=False)


def test_a_verifier_trained_in_python_knows_its_writers(small_signatures, tmp_path):
    import pandas as pd

    from sigest import training
    from sigest.persistence import load, save

    table = pd.DataFrame({"writer": small_signatures.writer, "genuine": small_signatures.genuine,
                          "image": list(small_signatures.images)})
    learned, new = table[table["writer"].isin(sorted(table["writer"].unique())[:4])], table
    model = training.train_verifier(learned, valid_writers=2, size=(32, 64), max_epochs=1, progress=False,
                                    module__embedding_dim=16, writers_per_batch=2, samples_per_writer=4)
    assert model.learned_writers_ == sorted(learned["writer"].astype(str).unique())
    with pytest.warns(UserWarning, match="4 of the calibration writers .* trained or validated on"):
        training.calibrate(model, new, k=2)
    save(model, tmp_path / "m.safetensors")
    assert load(tmp_path / "m.safetensors").sigest_info_["info"]["writers"] == model.learned_writers_


def test_embeddings_follow_the_weights_through_training_and_loading(images_and_targets):
    import pickle

    images, writers, genuine = images_and_targets
    targets = embedding_targets(writers, genuine)
    net = tiny_net(max_epochs=1).fit(images, targets)
    x = images[:5]

    def direct():  # the network itself, batch norms unfolded
        with torch.no_grad():
            return net.module_.eval()(torch.from_numpy(x)).numpy()

    np.testing.assert_allclose(net.transform(x), direct(), atol=1e-5)
    before = net.transform(x)
    net.partial_fit(images, targets)  # the weights change in place
    assert not np.allclose(net.transform(x), before, atol=1e-4)
    np.testing.assert_allclose(net.transform(x), direct(), atol=1e-5)
    net.module_.load_state_dict(tiny_net(max_epochs=1, random_state=1).fit(images, targets).module_.state_dict())
    np.testing.assert_allclose(net.transform(x), direct(), atol=1e-5)
    np.testing.assert_allclose(net.transform_views(x)["embedding"], direct(), atol=1e-5)
    assert b"_inference_copy" not in pickle.dumps(net)  # a cache, not saved
    with torch.inference_mode():  # a network made there has no version counters to watch
        made = tiny_net().initialize()
        made.module_.load_state_dict(net.module_.state_dict())
        np.testing.assert_allclose(made.transform(x), direct(), atol=1e-5)
    np.testing.assert_allclose(made.transform(x), direct(), atol=1e-5)
    assert net.transform(x[:0]).shape == (0, 16) and net.transform(x[None, :0]).shape == (1, 0, 16)  # no image
    assert net.transform_views(x[:0])["strips"].shape == (0, net.module_.n_strips, 16)


def test_augment_is_applied_in_training_only_and_keeps_shape(images_and_targets):
    images, writers, genuine = images_and_targets
    x = torch.from_numpy(images[:8])
    g = torch.Generator().manual_seed(0)
    out = SignatureAugment()(x, generator=g)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert 0.5 < out.sum() / x.sum() < 2.0, "ink is moved and thickened, not erased or multiplied"
    calls = []

    class Spy(SignatureAugment):
        def forward(self, x, generator=None):
            calls.append(x.shape)
            return super().forward(x, generator=generator)

    net = tiny_net(augment=Spy(), max_epochs=1).fit(images, embedding_targets(writers, genuine))
    n_batches = len(net.history[-1, "batches"])
    assert len(calls) == n_batches
    net.transform(images)
    assert len(calls) == n_batches, "no augmentation at inference"


def test_autocast_computes_in_bfloat16_and_returns_float32(images_and_targets):
    images, writers, genuine = images_and_targets
    targets = embedding_targets(writers, genuine)
    net = tiny_net(max_epochs=1).fit(images, targets)
    full = net.transform(images)
    half = net.set_params(autocast="bfloat16").transform(images)
    assert half.dtype == np.float32 and not np.array_equal(half, full)  # computed in bfloat16
    assert np.min(np.sum(half * full, axis=1)) > 0.99  # unit rows: cosine similarity to the float32 embeddings
    trained = tiny_net(max_epochs=1, autocast="bfloat16").initialize()
    dtypes = []
    conv = next(m for m in trained.module_.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trained.partial_fit(images, targets)
    assert set(dtypes) == {torch.bfloat16} and np.isfinite(trained.history[-1, "train_loss"])
    with pytest.raises(ValueError, match="autocast must be None or 'bfloat16'"):
        tiny_net(autocast="float16").initialize()


def test_local_weight_adds_the_local_triplet_loss_on_the_training_batches_only(images_and_targets):
    images, writers, genuine = images_and_targets
    targets = embedding_targets(writers, genuine)
    net = tiny_net(max_epochs=1, local_weight=0.5, local_margin=0.2).initialize()
    asked = []
    net.module_.register_forward_pre_hook(lambda module, args, kwargs: asked.append(kwargs.get("with_local", False)),
                                          with_kwargs=True)
    net.partial_fit(images, targets)
    assert asked and all(asked), "every training batch asks for the local descriptors"
    assert np.isfinite(net.history[-1, "train_loss"])
    asked.clear()
    net.transform(images[:4])
    assert not any(asked), "inference does not"
    x, y = torch.from_numpy(images[:24]), torch.from_numpy(targets[:24])
    net.module_.train()
    with torch.no_grad():
        embeddings, descriptors = net.module_(x, with_local=True)
        combined = net.get_loss((embeddings, descriptors), y, training=True)
        alone = net.get_loss(embeddings, y, training=True)
        local = net.local_criterion_(descriptors, y[:, 0], y[:, 1].bool())
    assert local > 0 and net.local_criterion_.margin == 0.2
    torch.testing.assert_close(combined, alone + 0.5 * local)
    asked.clear()
    plain = tiny_net(max_epochs=1).initialize()  # the default, local_weight=0: the embeddings alone
    plain.module_.register_forward_pre_hook(lambda module, args, kwargs: asked.append(kwargs.get("with_local", False)),
                                            with_kwargs=True)
    plain.partial_fit(images, targets)
    assert asked and not any(asked)
    state = tiny_net().initialize().__getstate__()  # a net pickled before the local loss existed: trained without it
    del state["local_weight"], state["local_margin"]
    old = SiameseEmbedder.__new__(SiameseEmbedder)
    old.__setstate__(state)
    assert old.local_weight == 0.0 and old.get_params()["local_margin"] == 0.1


def test_augment_p_sets_the_share_of_distorted_images(images_and_targets):
    x = torch.from_numpy(images_and_targets[0][:40])
    assert torch.equal(SignatureAugment(p=0.0)(x, generator=torch.Generator().manual_seed(0)), x)
    out = SignatureAugment(p=0.5)(x, generator=torch.Generator().manual_seed(0))
    unchanged = sum(torch.equal(a, b) for a, b in zip(out, x))
    assert 8 <= unchanged <= 32, unchanged
    with pytest.raises(ValueError, match="p must be a probability"):
        SignatureAugment(p=1.5)


def test_elastic_warp_bends_strokes_locally_and_differs_per_image(images_and_targets):
    x = torch.from_numpy(images_and_targets[0][:1]).repeat(2, 1, 1, 1)  # the same image twice
    x = torch.nn.functional.pad(x, (16, 16, 8, 8))  # a margin, so that no stroke leaves the frame
    still = dict(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.0, stroke=0.0)
    torch.testing.assert_close(SignatureAugment(**still)(x, generator=torch.Generator().manual_seed(0)), x)
    out = SignatureAugment(**still, elastic=0.03)(x, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(out[0], x[0]) and not torch.equal(out[0], out[1]), "one field an image"
    assert 0.8 < out[0].sum() / x[0].sum() < 1.25, "ink is moved, not erased"
    for position in (torch.arange(x.shape[2]).view(-1, 1), torch.arange(x.shape[3]).view(1, -1)):  # rows, columns
        centre = [(img[0] * position).sum() / img[0].sum() for img in (x[0], out[0])]
        # the ink's centre moves no further than the largest displacement (bicubic may overshoot the nodes a little)
        assert abs(centre[0] - centre[1]) < 1.25 * 0.03 * x.shape[2]
    with pytest.raises(ValueError, match="elastic must be"):
        SignatureAugment(elastic=-0.1)


def test_ink_jitter_scales_each_image_by_one_factor(images_and_targets):
    x = torch.from_numpy(images_and_targets[0][:40])
    ink = x > 0
    out = InkJitter(factor=(0.6, 0.9), p=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out[~ink], x[~ink]), "the background stays zero"
    factors = [(a[m] / b[m]) for a, b, m in zip(out, x, ink)]
    assert all(torch.allclose(f, f[0], rtol=1e-5) and 0.6 <= f[0] <= 0.9 for f in factors)
    assert len({round(float(f[0]), 4) for f in factors}) > 30, "a factor drawn per image"
    darker = InkJitter(factor=(1.5, 1.5), p=1.0)(x)
    assert torch.allclose(darker, (1.5 * x).clamp(max=1.0))
    half = InkJitter(p=0.5)(x, generator=torch.Generator().manual_seed(0))
    unchanged = sum(torch.equal(a, b) for a, b in zip(half, x))
    assert 8 <= unchanged <= 32, unchanged
    with pytest.raises(ValueError, match="p must be a probability"):
        InkJitter(p=-0.1)
    with pytest.raises(ValueError, match="factor must be a range"):
        InkJitter(factor=(1.2, 0.8))


def test_fit_leaves_torch_global_rng_alone(images_and_targets):
    images, writers, genuine = images_and_targets
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    net = tiny_net(max_epochs=1).fit(images, embedding_targets(writers, genuine))
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(123)
    net.transform(images), net.transform_views(images)  # inference too: the data loader draws a seed
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")  # CPU-only machines
def test_loader_options_reach_the_writer_balanced_loader(images_and_targets):
    images, writers, genuine = images_and_targets
    seen = {}

    class Loader(torch.utils.data.DataLoader):
        def __init__(self, dataset, **kwargs):
            seen.update(kwargs)
            super().__init__(dataset, **kwargs)

    tiny_net(max_epochs=1, iterator_train=Loader, iterator_train__pin_memory=True).fit(
        images, embedding_targets(writers, genuine))
    assert seen["pin_memory"] is True and "batch_sampler" in seen


@pytest.mark.parametrize("name, loss_class", [("proxy_anchor", ProxyAnchorLoss), ("arcface", ArcFaceLoss)])
def test_writer_class_losses_learn_from_writer_labels(images_and_targets, name, loss_class):
    images, writers, genuine = images_and_targets
    assert isinstance(get_loss(name, num_writers=3), loss_class)
    n_writers = len(np.unique(writers))
    net = tiny_net(criterion=name, criterion__num_writers=n_writers, criterion__embedding_dim=16,
                   max_epochs=3, lr=1e-2)
    net.fit(images, embedding_targets(writers, genuine))
    assert isinstance(net.criterion_, loss_class)  # chosen by its registered name
    losses = net.history[:, "train_loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    loss = loss_class(num_writers=2, embedding_dim=4)
    with pytest.raises(ValueError, match="num_writers"):
        loss(torch.randn(3, 4), torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="num_writers"):
        tiny_net(criterion=name, criterion__num_writers=2, criterion__embedding_dim=16).fit(
            images, embedding_targets(writers, genuine))


def test_a_net_saved_on_cuda_predicts_on_a_cpu_only_machine(images_and_targets, monkeypatch):
    """Simulated: the pickled state says "cuda"; loading where CUDA is absent maps everything to the CPU."""
    images, writers, genuine = images_and_targets
    net = tiny_net(max_epochs=1).fit(images, embedding_targets(writers, genuine))
    expected = net.transform(images[:4])
    net.__dict__["device"] = "cuda"
    buffer = io.BytesIO()
    joblib.dump(net, buffer)
    net.__dict__["device"] = "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    buffer.seek(0)
    with pytest.warns(Warning):
        loaded = joblib.load(buffer)
    assert loaded.device == "cpu" and loaded.get_params()["device"] == "cpu"
    np.testing.assert_allclose(loaded.transform(images[:4]), expected, rtol=1e-5, atol=1e-6)


def test_early_stopping_is_a_normal_end_and_ctrl_c_is_not(images_and_targets, small_signatures, monkeypatch):
    from sigest import train_siamese_model

    table = small_signatures.table
    images = PreprocessImage(size=SIZE).transform(list(table.image))
    kwargs = dict(images=images, valid_writers=2, patience=1, progress=False, random_state=0,
                  module__backbone="resnet_tiny", module__embedding_dim=16, lr=0.3, device="cpu")
    net = train_siamese_model(table, max_epochs=30, **kwargs)  # lr 0.3 stalls the validation EER: patience 1 stops it
    assert len(net.history) < 30 and not net.interrupted_

    def interrupt(self, net, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(WriterEER, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt, match="interrupted after 1 epoch"):
        train_siamese_model(table, max_epochs=30, **kwargs)


class _WeightsSeen(Callback):
    """Records, at each epoch's start and end, the network's weights and a WeightAverage's own and average ones."""

    def __init__(self, average):
        self.average = average
        self.seen = []

    def _copy(self, weights):
        return [w.detach().clone() for w in weights]

    def on_epoch_begin(self, net, **kwargs):
        self.seen.append({"net": self._copy(net.module_.parameters())})

    def on_epoch_end(self, net, **kwargs):
        self.seen.append({"net": self._copy(net.module_.parameters()),
                          "own": self._copy(self.average.own_.values()),
                          "average": self._copy(self.average.average_.values())})


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_weight_average_is_judged_at_epoch_end_while_training_goes_on_from_its_own_weights(images_and_targets):
    images, writers, genuine = images_and_targets
    y = embedding_targets(writers, genuine)
    average = WeightAverage(decay=0.9)
    spy = _WeightsSeen(average)
    net = tiny_net(max_epochs=2, writers_per_batch=4, samples_per_writer=2, train_split=None, verbose=0,
                   callbacks=[average, spy]).fit(images, y)
    begin_1, end_1, begin_2, end_2 = spy.seen
    assert _same(end_1["net"], end_1["average"]) and not _same(end_1["net"], end_1["own"])  # judged: the average
    assert _same(begin_2["net"], end_1["own"])  # the next epoch trains on from its own weights
    assert _same(net.module_.parameters(), end_2["average"])  # the fitted net keeps the last average
    last = WeightAverage(decay=0.0)  # decay 0: the average is the last step, nothing changes
    net = tiny_net(max_epochs=1, writers_per_batch=4, samples_per_writer=2, train_split=None, verbose=0,
                   callbacks=[last]).fit(images, y)
    assert _same(last.own_.values(), net.module_.parameters())
