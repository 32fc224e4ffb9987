import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sigest.nn import (
    LocalMatchTripletLoss,
    SiameseResNet,
    SpatialAttention,
    SupConLoss,
    TripletLoss,
    fold_batch_norms,
    get_backbone,
    get_loss,
    identity_labels,
    list_attention,
    list_backbones,
    list_losses,
    local_best_matches,
    local_match_distance,
    pool_local_descriptors,
    pooled_reach,
    register_backbone,
    resnet_tiny,
    weighted_local_descriptors,
    within_writer_whitening,
)
from sigest.nn.registry import Registry


def test_spatial_attention_preserves_shape_and_passes_gradients():
    block = SpatialAttention()
    x = torch.randn(2, 8, 10, 12, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape
    mask = block.mask(x)
    assert mask.shape == (2, 1, 10, 12) and ((mask > 0) & (mask < 1)).all()
    out.sum().backward()
    assert block.conv.weight.grad is not None and block.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(4)


def test_siamese_resnet_shares_weights_across_pairs_and_triplets():
    torch.manual_seed(0)
    net = SiameseResNet("resnet_tiny", embedding_dim=16).eval()
    x = torch.rand(3, 1, 40, 60)
    single = net(x)
    assert single.shape == (3, 16)
    torch.testing.assert_close(single.norm(dim=1), torch.ones(3))
    triplet = net(torch.stack([x, x.flip(0), x], dim=1))
    assert triplet.shape == (3, 3, 16)
    torch.testing.assert_close(triplet[:, 0], single)
    torch.testing.assert_close(triplet[:, 2], single)
    with pytest.raises(ValueError, match="attention_stages"):
        SiameseResNet("resnet_tiny", attention_stages=(5,))
    # channels-last memory is a speed choice only: the values are those of the default layout
    assert net.backbone.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = SiameseResNet("resnet_tiny", embedding_dim=16).eval().to(memory_format=torch.contiguous_format)
    nchw.load_state_dict(net.state_dict())  # copies values into its NCHW parameters
    assert nchw.backbone.stem[0].weight.is_contiguous() and nchw.backbone.stages[1][0].conv1.weight.is_contiguous()
    torch.testing.assert_close(nchw(x), single, rtol=1e-5, atol=1e-5)


def test_within_writer_whitening_equalises_the_writers_own_spread():
    g = torch.Generator().manual_seed(0)
    writers = torch.arange(30).repeat_interleave(8)
    scale = torch.tensor([4.0, 1.0, 0.25])
    E = torch.randn(30, 3, generator=g)[writers] * 3 + torch.randn(240, 3, generator=g) * scale
    W = within_writer_whitening(E, writers, shrinkage=1e-6)
    centred = E - torch.stack([E[writers == w].mean(0) for w in range(30)])[writers]
    whitened = centred @ W
    torch.testing.assert_close(whitened.T @ whitened / len(E), torch.eye(3), rtol=0, atol=1e-4)
    # full shrinkage: a multiple of the identity, distances only rescaled
    W1 = within_writer_whitening(E, writers, shrinkage=1.0)
    torch.testing.assert_close(W1 @ W1.T / (W1 @ W1.T)[0, 0], torch.eye(3), rtol=0, atol=1e-5)
    # a writer with one signature has no spread to give: adding one changes nothing
    lone = within_writer_whitening(torch.cat([E, torch.full((1, 3), 50.0)]), torch.cat([writers, torch.tensor([99])]),
                                   shrinkage=1e-6)
    torch.testing.assert_close(lone @ lone.T, W @ W.T, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="shrinkage"):
        within_writer_whitening(E, writers, shrinkage=0.0)
    with pytest.raises(ValueError, match="at least 2"):
        within_writer_whitening(E[:3], torch.arange(3))


def test_siamese_resnet_whitening_is_the_identity_until_set_and_resets():
    torch.manual_seed(0)
    net = SiameseResNet("resnet_tiny", embedding_dim=4).eval()
    x = torch.rand(5, 1, 40, 60)
    raw = net(x)
    torch.testing.assert_close(net.whitening, torch.eye(4))
    W = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert net.set_whitening(W) is net
    whitened = net(x)
    torch.testing.assert_close(whitened, F.normalize(raw @ W, dim=1))
    torch.testing.assert_close(whitened.norm(dim=1), torch.ones(5))
    assert "whitening" in net.state_dict()
    old = {k: v for k, v in net.state_dict().items() if k != "whitening"}  # saved before whitening existed
    fresh = SiameseResNet("resnet_tiny", embedding_dim=4).eval().set_whitening(W)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh(x), raw)
    torch.testing.assert_close(net.set_whitening(None)(x), raw)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        net.set_whitening(torch.eye(3))


def test_siamese_resnet_views_come_from_one_pass_each_whitened_by_its_own_map():
    torch.manual_seed(0)
    net = SiameseResNet("resnet_tiny", embedding_dim=4).eval()
    x = torch.rand(5, 1, 40, 60)
    views = net.views(x)
    assert views["penultimate"].shape == (5, net.backbone.stage_channels[-2])
    assert views["strips"].shape == (5, net.n_strips, 4)  # 4 strips even where the last map is 2 columns wide
    assert views["texture"].shape == (5, net.backbone.stage_channels[net.texture_stage - 1])
    torch.testing.assert_close(views["embedding"], net(x))
    stage = net.backbone.stages[net.texture_stage - 1](net.backbone.stages[0](net.backbone.stem(x)))  # no attention
    torch.testing.assert_close(views["texture"], F.normalize(stage.flatten(2).std(dim=2, correction=0), dim=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a one-position map has no spread: zeros, not NaN and a warning
        one_position = net.views(torch.rand(2, 1, 8, 8))["texture"]
    torch.testing.assert_close(one_position, torch.zeros_like(one_position))
    for name in ("penultimate", "strips", "texture"):
        torch.testing.assert_close(views[name].norm(dim=-1), torch.ones(views[name].shape[:-1]))
    c = net.backbone.stage_channels[-2]
    P, S = torch.diag(torch.arange(1.0, c + 1)), torch.diag(torch.tensor([1.0, 2, 3, 4])).repeat(net.n_strips, 1, 1)
    t = views["texture"].shape[1]
    T = torch.diag(torch.arange(t, 0.0, -1))
    assert net.set_view_whitening(P, S, T) is net
    whitened = net.views(x)
    torch.testing.assert_close(whitened["embedding"], views["embedding"])  # the embedding keeps its own map
    torch.testing.assert_close(whitened["penultimate"], F.normalize(views["penultimate"] @ P, dim=1))
    torch.testing.assert_close(whitened["strips"], F.normalize(views["strips"] @ S[0], dim=2))
    torch.testing.assert_close(whitened["texture"], F.normalize(views["texture"] @ T, dim=1))
    old = {k: v for k, v in net.state_dict().items() if "_whitening" not in k}  # saved before the views
    fresh = SiameseResNet("resnet_tiny", embedding_dim=4).eval().set_view_whitening(P, S, T)
    fresh.load_state_dict(old)
    for name in ("penultimate", "texture"):
        torch.testing.assert_close(fresh.views(x)[name], views[name])
    with pytest.raises(ValueError, match="view whitening must be of shape"):
        net.set_view_whitening(torch.eye(3))


def test_the_local_view_is_the_texture_stage_as_weighted_unit_descriptors_centred_on_local_mean():
    torch.manual_seed(0)
    net = SiameseResNet("resnet_tiny", embedding_dim=4).eval()
    x = torch.rand(3, 1, 40, 60)
    raw = net.views(x, raw_local=True)["local"]
    c = net.backbone.stage_channels[net.texture_stage - 1]
    assert raw.shape == (3, 5, 8, c)  # stage 2 of resnet_tiny: an eighth of the image, positions last
    local = net.views(x)["local"]
    weight = raw.norm(dim=3) / raw.norm(dim=3).sum((1, 2), keepdim=True)
    torch.testing.assert_close(local, F.normalize(raw, dim=3) * weight[..., None])
    mean = raw.mean((0, 1, 2))
    net.set_view_whitening(local_mean=mean)
    centred = net.views(x)["local"]
    torch.testing.assert_close(centred.norm(dim=3), weight)  # the weights come from the raw descriptors
    torch.testing.assert_close(centred, F.normalize(raw - mean, dim=3) * weight[..., None])
    old = {k: v for k, v in net.state_dict().items() if k != "local_mean"}  # saved before the local view
    fresh = SiameseResNet("resnet_tiny", embedding_dim=4).eval().set_view_whitening(local_mean=mean)
    fresh.load_state_dict(old)
    torch.testing.assert_close(fresh.local_mean, torch.zeros(c))
    with pytest.raises(ValueError, match="local_mean must be of shape"):
        net.set_view_whitening(local_mean=torch.zeros(c + 1))


def test_local_match_distance_tolerates_shifts_within_its_reach_only():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(4, 9, 12, 64), dim=3) / (9 * 12)  # unit descriptors, equal weights
    b = F.normalize(torch.randn(4, 9, 12, 64), dim=3) / (9 * 12)
    torch.testing.assert_close(local_match_distance(a, a), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(local_match_distance(a, b), local_match_distance(b, a))
    assert (local_match_distance(a, b) > 0.3).all()  # unrelated descriptors
    shifted = torch.zeros_like(a)
    shifted[:, :, 2:] = a[:, :, :-2] * 12 / 10  # two columns to the right; the two new columns weigh nothing
    near = local_match_distance(a, shifted, reach=(0, 2))
    far = local_match_distance(a, shifted, reach=(0, 1))
    assert (near < 0.1).all() and (far > near + 0.2).all()
    torch.testing.assert_close(local_match_distance(a, b, chunk=3), local_match_distance(a, b))
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        local_match_distance(a, b[:, :5])


def test_pooled_local_descriptors_sum_each_block_and_weigh_one_in_all():
    torch.manual_seed(0)
    grids = weighted_local_descriptors(torch.randn(3, 5, 7, 4), torch.zeros(4))
    grids[2] = 0  # an image without ink stays without weight
    pooled = pool_local_descriptors(grids, 2)
    assert pooled.shape == (3, 3, 4, 4)  # the last row and column of blocks are smaller
    blocks = torch.stack([torch.stack([grids[:, r:r + 2, c:c + 2].sum((1, 2)) for c in range(0, 7, 2)], dim=1)
                          for r in range(0, 5, 2)], dim=1)
    torch.testing.assert_close(pooled[:2], blocks[:2] / blocks[:2].norm(dim=3).sum((1, 2))[:, None, None, None])
    torch.testing.assert_close(pooled[:2].norm(dim=3).sum((1, 2)), torch.ones(2))
    assert not pooled[2].any()
    torch.testing.assert_close(local_match_distance(pooled, pooled), torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert pool_local_descriptors(grids, 1) is grids
    assert pooled_reach((4, 6), 1) == (4, 6) and pooled_reach((4, 6), 2) == (2, 3) and pooled_reach((4, 6), 4) == (1, 2)
    for factor in (0, 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            pool_local_descriptors(grids, factor)
    # the pairs matched at a time (by default as many as fit 1.2 million similarities) change nothing
    a, b = torch.randn(70, 3, 4, 5), torch.randn(70, 3, 4, 5)
    for default, one_at_a_time in zip(local_best_matches(a, b, (1, 1)), local_best_matches(a, b, (1, 1), chunk=1)):
        torch.testing.assert_close(default, one_at_a_time)


def _dense_best_matches(a, b, reach):
    """local_best_matches by its definition: every similarity, each position's masked maximum."""
    _, height, width, _ = a.shape
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, columns = rows.flatten(), columns.flatten()
    near = ((rows[:, None] - rows).abs() <= reach[0]) & ((columns[:, None] - columns).abs() <= reach[1])
    similarity = F.normalize(a.flatten(1, 2), dim=2) @ F.normalize(b.flatten(1, 2), dim=2).transpose(1, 2)
    similarity = similarity.masked_fill(~near, -torch.inf)
    return similarity.amax(2).reshape(-1, height, width), similarity.amax(1).reshape(-1, height, width)


def test_local_best_matches_and_their_gradients_are_those_of_the_dense_definition():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 6, 5), torch.randn(3, 4, 6, 5)
    weights = torch.rand(2, 3, 4, 6)

    def weighted(matches):
        return sum((w * m).sum() for w, m in zip(weights, matches))

    x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
    weighted(local_best_matches(x, y, reach=(1, 2), chunk=2)).backward()
    x_dense, y_dense = a.clone().requires_grad_(), b.clone().requires_grad_()
    weighted(_dense_best_matches(x_dense, y_dense, (1, 2))).backward()
    for found, expected in zip(local_best_matches(a, b, reach=(1, 2)), _dense_best_matches(a, b, (1, 2))):
        torch.testing.assert_close(found, expected)
    torch.testing.assert_close(x.grad, x_dense.grad)
    torch.testing.assert_close(y.grad, y_dense.grad)
    a[0, 1, 2] = 0  # a position of weight 0: similarity 0 with everything
    assert local_best_matches(a, b, reach=(1, 2))[0][0, 1, 2] == 0


def test_local_match_distance_gradients_are_those_of_its_best_matches():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 6, 5), torch.randn(3, 4, 6, 5)

    def dense(a, b, reach=(1, 2)):  # the definition: the best match of each position through every similarity
        forward, backward = _dense_best_matches(a, b, reach)
        return 1 - ((forward * a.norm(dim=3)).sum((1, 2)) + (backward * b.norm(dim=3)).sum((1, 2))) / 2

    x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
    local_match_distance(x, y, reach=(1, 2)).sum().backward()
    x_dense, y_dense = a.clone().requires_grad_(), b.clone().requires_grad_()
    dense(x_dense, y_dense).sum().backward()
    torch.testing.assert_close(local_match_distance(a, b, reach=(1, 2)), dense(a, b))
    torch.testing.assert_close(x.grad, x_dense.grad)
    torch.testing.assert_close(y.grad, y_dense.grad)


def test_forward_with_local_gives_the_embedding_and_the_local_views_raw_descriptors_with_gradients():
    torch.manual_seed(0)
    net = SiameseResNet("resnet_tiny", embedding_dim=4).eval()
    x = torch.rand(3, 1, 40, 60)
    embedding, descriptors = net(x, with_local=True)
    torch.testing.assert_close(embedding, net(x))
    torch.testing.assert_close(descriptors, net.views(x, raw_local=True)["local"])
    descriptors.sum().backward()
    assert net.backbone.stages[0][0].conv1.weight.grad is not None
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\) input"):
        net(x[None], with_local=True)


def _brute_force_local_triplet(descriptors, writers, genuine, margin, anchors_per_writer):
    """LocalMatchTripletLoss by its definition, one anchor at a time."""
    local = weighted_local_descriptors(descriptors, descriptors.mean((0, 1, 2)))
    terms = []
    for writer in writers.unique():
        rows = torch.nonzero(writers == writer).flatten().tolist()
        real = [i for i in rows if genuine[i]]
        if len(real) < 2 or len(real) == len(rows):
            continue
        for a in real[:anchors_per_writer]:
            d = {i: local_match_distance(local[a:a + 1], local[i:i + 1]).item() for i in rows if i != a}
            farthest = max(d[i] for i in real if i != a)
            nearest = min(d[i] for i in rows if not genuine[i])
            terms.append(max(0.0, float(torch.log(torch.tensor(farthest / nearest))) + margin))
    return sum(terms) / len(terms)


def test_local_match_triplet_loss_compares_each_anchors_farthest_genuine_with_its_nearest_forgery():
    torch.manual_seed(0)
    descriptors = torch.rand(11, 4, 5, 8)
    writers = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])  # writer 2 has no forgery here: no anchor
    genuine = torch.tensor([True, False, True, True, False, True, True, False, True, True, True])
    loss = LocalMatchTripletLoss(margin=0.3, anchors_per_writer=2, chunk=3)
    expected = _brute_force_local_triplet(descriptors, writers, genuine, 0.3, 2)
    assert expected > 0 and loss(descriptors, writers, genuine).item() == pytest.approx(expected, rel=1e-4)
    one = _brute_force_local_triplet(descriptors, writers, genuine, 0.3, 1)
    assert LocalMatchTripletLoss(margin=0.3, anchors_per_writer=1)(descriptors, writers, genuine).item() == \
        pytest.approx(one, rel=1e-4)
    # forgeries whose strokes are nothing like the writer's: the margin is met, nothing to learn
    apart = torch.where(genuine[:, None, None, None], descriptors, -descriptors)
    assert LocalMatchTripletLoss(margin=0.1)(apart, writers, genuine).item() == 0.0
    x = descriptors.clone().requires_grad_()
    out = LocalMatchTripletLoss()(x, writers, torch.ones(11, dtype=torch.bool))  # no forgery at all
    out.backward()
    assert out.item() == 0.0 and x.grad is not None


@pytest.mark.parametrize("backbone", ["resnet_tiny", "resnet50"])  # BasicBlock; Bottleneck
def test_inference_copy_folds_every_batch_norm_and_gives_the_same_views(backbone):
    torch.manual_seed(0)
    net = SiameseResNet(backbone, embedding_dim=8)
    net.train()(torch.rand(6, 1, 64, 96))  # running statistics away from 0 and 1
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 2.0)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    net.eval()
    folded = net.for_inference()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) and not folded.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0  # the network itself keeps them
    x = torch.rand(3, 1, 64, 96)
    with torch.no_grad():
        expected, got = net.views(x), folded.views(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(SiameseResNet("resnet_tiny").train())


def test_gradients_flow_through_attention():
    net = SiameseResNet("resnet_tiny", embedding_dim=8, attention_stages=(2, 4))
    net(torch.rand(4, 1, 40, 60)).pow(2).sum().backward()
    for block in net.attention.values():
        assert block.conv.weight.grad.abs().sum() > 0


def test_resnet_tiny_block_is_torchvisions_basic_block_without_importing_torchvision():
    import copy
    import subprocess
    import sys

    from torchvision.models.resnet import BasicBlock as TorchvisionBlock

    torch.manual_seed(0)
    ours = resnet_tiny().stages[1][0].eval()  # 16 -> 32 channels, stride 2, with a downsample
    theirs = TorchvisionBlock(16, 32, 2, downsample=copy.deepcopy(ours.downsample))
    theirs.load_state_dict(ours.state_dict())  # the same layer names: weights move unchanged
    x = torch.rand(2, 16, 20, 30)
    torch.testing.assert_close(ours(x), theirs.eval()(x))
    code = "import sys, sigest, sigest.cli; sigest.pretrained('sigest-base'); print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # torchvision's import (about 1.2 s) is left to its own backbones


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_backbones_take_one_channel(name):
    backbone = get_backbone(name)
    assert backbone.stem[0].in_channels == 1
    out = backbone(torch.rand(1, 1, 64, 64))
    assert out.shape[1] == backbone.stage_channels[-1]


def test_triplet_loss_zero_when_separated_positive_otherwise():
    loss = TripletLoss(margin=0.2)
    a = torch.tensor([[1.0, 0.0]])
    separated = (torch.cat([a, a, -a]), None, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    swapped = (torch.cat([a, -a, a]), None, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    assert loss(*separated).item() == 0.0
    assert loss(*swapped).item() == pytest.approx(2.2)
    soft = TripletLoss(margin=0.0, smooth=True)  # softplus(d_ap - d_an): never exactly zero, keeps pulling
    assert soft(*separated).item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(-2.0)).item())
    assert soft(*swapped).item() == pytest.approx(torch.nn.functional.softplus(torch.tensor(2.0)).item())
    cosine = TripletLoss(margin=0.1, distance="cosine")
    assert cosine(*separated).item() == 0.0 and cosine(*swapped).item() > 0
    with pytest.raises(ValueError, match="distance"):
        TripletLoss(distance="manhattan")
    with pytest.raises(ValueError, match="labels"):
        loss(torch.cat([a, a]))


def test_log_euclidean_triplet_loss_is_a_margin_on_the_distance_ratio():
    e = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6], [-1.0, 0.1]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    ratio, plain = TripletLoss(margin=0.2, distance="log_euclidean"), TripletLoss(margin=0.2)
    triplets = ratio.mine(e, labels)
    assert all(torch.equal(x, y) for x, y in zip(triplets, plain.mine(e, labels)))  # log keeps the order: same triplets
    a, p, n = triplets
    d = torch.cdist(e, e)
    expected = torch.relu(torch.log(d[a, p] / d[a, n]) + 0.2).mean()  # the mean over the mined triplets
    assert ratio(e, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    far = (torch.cat([e[:1], e[:1] * 0.999 + 0.001, -e[:1]]), None, tuple(torch.tensor([i]) for i in range(3)))
    assert ratio(*far).item() == 0.0  # d(a, p) far below exp(-margin) d(a, n)


def test_batch_hard_mining_picks_hardest_and_treats_forgeries_as_negatives():
    e = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.95, 0.05], [-1.0, 0.0], [-0.9, -0.1]]), dim=1)
    writers = torch.tensor([0, 0, 0, 0, 1, 1])
    genuine = torch.tensor([True, True, True, False, True, True])
    labels = identity_labels(writers, genuine)
    a, p, n = TripletLoss(mining="batch_hard").mine(e, labels, anchors=genuine)
    assert 3 not in a.tolist()  # forgeries are never anchors
    row = a.tolist().index(0)
    assert p[row].item() == 2  # the farthest genuine of writer 0
    assert n[row].item() == 3  # the closest negative is writer 0's skilled forgery
    assert TripletLoss()(e, labels, (a, p, n)).item() > 0
    assert identity_labels(writers, genuine, offset=10).tolist() == [0, 0, 0, 10, 1, 1]


def test_supcon_loss_prefers_tight_writers_and_anchors_only_genuine():
    loss = get_loss("supcon", temperature=0.1)
    assert isinstance(loss, SupConLoss)
    writers = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    genuine = torch.tensor([True, True, True, False, False, True, True, True])
    labels = identity_labels(writers, genuine)
    tight = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [1.0, -0.05], [0.0, 1.0], [0.0, 1.0],
                                      [-1.0, 0.0], [-1.0, 0.05], [-1.0, -0.05]]), dim=1)
    loose = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [1.0, 0.05], [1.0, -0.05],
                                      [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), dim=1)
    a1, p, a2, n = loss.mine(tight, labels, anchors=genuine)
    assert genuine[a1].all() and genuine[a2].all()  # the two forgeries (one class) pull on nothing
    assert set(n[a2 == 0].tolist()) == {3, 4, 5, 6, 7}  # writer 0's forgeries are among its negatives
    assert loss(tight, labels, (a1, p, a2, n)) < loss(loose, labels, loss.mine(loose, labels, anchors=genuine))
    e = tight.clone().requires_grad_()
    lonely = identity_labels(torch.arange(8), torch.ones(8, dtype=torch.bool))  # nobody has a positive
    out = loss(e, lonely, loss.mine(e, lonely))
    out.backward()
    assert out.item() == 0.0 and e.grad is not None


def test_registry_and_entry_points(monkeypatch):
    assert {"resnet18", "resnet34", "resnet50", "resnet_tiny"} <= set(list_backbones())
    assert "spatial" in list_attention() and "triplet" in list_losses()
    with pytest.raises(ValueError, match="unknown backbone 'nope'"):
        get_backbone("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet_tiny")(resnet_tiny)

    class FakeEntryPoint:
        name = "from_plugin"

        def load(self):
            return lambda in_channels=1: resnet_tiny(in_channels, widths=(8, 8, 8, 8))

    registry = Registry("backbone", "sigest.test-group")
    monkeypatch.setattr("sigest.nn.registry.entry_points", lambda group: [FakeEntryPoint()])
    assert registry.names() == ["from_plugin"]
    assert isinstance(registry.get("from_plugin"), nn.Module)
