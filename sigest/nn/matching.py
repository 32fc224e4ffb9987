"""Local descriptors of two signatures matched with some play in position: a distance that tolerates small shifts."""

import functools

import torch
import torch.nn.functional as F

__all__ = ["local_best_matches", "local_match_distance", "pool_local_descriptors", "pooled_reach",
           "weighted_local_descriptors"]

_SIMILARITIES_AT_A_TIME = 1_200_000  # floats of the similarity matrices computed at once (4.8 MB)


def weighted_local_descriptors(descriptors, mean):
    """Raw local descriptors as :func:`local_match_distance` compares them.

    Parameters
    ----------
    descriptors : Tensor of shape (N, H, W, C)
        A feature map's positions (e.g. ``SiameseResNet.views(x, raw_local=True)["local"]``).
    mean : Tensor of shape (C,)
        The centre: the mean descriptor of training images' positions.

    Returns
    -------
    Tensor of shape (N, H, W, C)
        Each position's descriptor minus ``mean``, of unit norm, times its weight: the raw
        descriptor's norm over the sum of the image's norms (the weights of an image sum to 1).
    """
    weight = descriptors.norm(dim=3)
    weight = weight / weight.sum((1, 2), keepdim=True).clamp_min(1e-12)
    return F.normalize(descriptors - mean, dim=3) * weight[..., None]


def pool_local_descriptors(descriptors, factor):
    """A coarser grid of weighted local descriptors: each ``factor`` x ``factor`` block summed into one position.

    Matching costs (H W)^2 a pair: pooled 2 x 2, a 19 x 28 grid becomes 10 x 14 and a pair's
    matching about 7x cheaper on a CPU (measured on 2 cores, 1,000 pairs: 0.48-0.54 ms -> 0.044-0.067
    ms). The grid keeps what :func:`local_match_distance` expects: a pooled position's norm is its weight,
    and each image's weights sum to 1 again (a block of strokes pointing different ways weighs less than
    the sum of its positions).

    Parameters
    ----------
    descriptors : Tensor of shape (N, H, W, C)
        Weighted unit descriptors (:func:`weighted_local_descriptors`).
    factor : int
        Block side; 1 returns ``descriptors`` as they are. The last block of a row or column is
        smaller when ``factor`` does not divide H or W.

    Returns
    -------
    Tensor of shape (N, ceil(H / factor), ceil(W / factor), C)
        Compare it within :func:`pooled_reach`.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if factor == 1:
        return descriptors
    pooled = F.avg_pool2d(descriptors.permute(0, 3, 1, 2), int(factor), ceil_mode=True, divisor_override=1)
    pooled = pooled.permute(0, 2, 3, 1)
    return pooled / pooled.norm(dim=3).sum((1, 2)).clamp_min(1e-12)[:, None, None, None]


def pooled_reach(reach, factor):
    """The largest match offset (rows, columns) on a grid pooled by ``factor``: ``reach`` / ``factor``, rounded up."""
    return tuple(-(-int(r) // int(factor)) for r in reach)


@functools.lru_cache(maxsize=16)
def _neighbours(height, width, reach):
    """(P, P) bool, P = height * width: positions at most ``reach`` = (rows, columns) apart, row-major."""
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, columns = rows.flatten(), columns.flatten()
    return ((rows[:, None] - rows[None]).abs() <= reach[0]) & ((columns[:, None] - columns[None]).abs() <= reach[1])


def local_best_matches(a, b, reach=(4, 6), chunk=None):
    """Each position's best similarity in the other grid, within ``reach``: both ways.

    Parameters
    ----------
    a, b : Tensor of shape (n, H, W, C)
        Grids of weighted unit descriptors, as :func:`local_match_distance` takes them. A position
        of weight 0 (a zero descriptor) has similarity 0 with every position.
    reach : (int, int), default=(4, 6)
        Largest offset of a match, in rows and columns of the grid.
    chunk : int or None, default=None
        Pairs compared at a time (memory: chunk x (H W)^2 floats, not kept for a backward pass).
        None: as many as keep about 1.2 million similarities (4.8 MB) at once, 4 pairs of 19 x 28
        grids, 61 of 10 x 14 ones (measured on 2 CPU cores, 1,000 pairs: the fastest sizes, within noise).

    Returns
    -------
    forward : Tensor of shape (n, H, W), float32
        For each position of ``a``, the cosine similarity of its best match in ``b`` at most
        ``reach`` away, in [-1, 1].
    backward : Tensor of shape (n, H, W), float32
        The same for each position of ``b``, matched in ``a``.

    Both are differentiable: the similarities are searched without gradient and the best matches
    computed again with it, so the backward pass costs (H W) x C per pair, not (H W)^2.
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two grids of shape (n, H, W, C), got {tuple(a.shape)} and {tuple(b.shape)}")
    n, height, width, channels = a.shape
    out_of_reach = torch.where(_neighbours(height, width, (int(reach[0]), int(reach[1]))), 0.0, -3.0).to(a.device)
    gradients = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if not n:
        empty = torch.zeros((0, height, width), device=a.device)
        return empty, empty
    chunk = chunk or max(1, _SIMILARITIES_AT_A_TIME // (height * width) ** 2)
    units = _unit(a.reshape(n, height * width, channels).float()), _unit(b.reshape(n, height * width, channels).float())
    forwards, backwards = [], []
    # a few pairs at a time, each similarity matrix in the CPU's cache; split, not sliced: one gradient for all
    for first, second in zip(*(unit.split(chunk) for unit in units)):
        with torch.no_grad():  # cosine similarity of every position of the first with every one of the second,
            similarity = torch.baddbmm(out_of_reach.expand(len(first), -1, -1), first,  # -3 beyond reach
                                       second.transpose(1, 2))
        if gradients:  # the best matches again, alone: their gradient, without one through every similarity
            # (max's indices: faster than argmax on the CPU, 2x along rows and 3x along columns)
            forwards.append((first * _gather_positions(second, similarity.max(2).indices)).sum(2))
            backwards.append((second * _gather_positions(first, similarity.max(1).indices)).sum(2))
        else:
            forwards.append(similarity.amax(2))
            backwards.append(similarity.amax(1))
    return torch.cat(forwards).reshape(n, height, width), torch.cat(backwards).reshape(n, height, width)


def local_match_distance(a, b, reach=(4, 6), chunk=None):
    """One minus the best-match similarity of two grids of weighted local descriptors, both ways.

    Each position of ``a`` is matched to the most similar position of ``b`` at most ``reach``
    away (cosine similarity of the descriptors, :func:`local_best_matches`), the matches are
    averaged with ``a``'s weights, and the same is done from ``b`` to ``a``; the distance is one
    minus the mean of the two. Two signatures whose strokes look alike in the same places, up to a
    shift within ``reach``, are near; a global average of the same maps forgets where each stroke
    feature was.

    Parameters
    ----------
    a, b : Tensor of shape (n, H, W, C)
        Each position's unit descriptor times its weight, the weights of one image summing to 1
        (the ``"local"`` view of :meth:`sigest.nn.SiameseResNet.views`). A position of weight 0
        matches nothing and counts for nothing.
    reach : (int, int), default=(4, 6)
        Largest offset of a match, in rows and columns of the grid.
    chunk : int or None, default=None
        Pairs compared at a time, as :func:`local_best_matches` takes it. Measured on 2 CPU cores,
        1,000 pairs of 19 x 28 x 32 grids: 0.30 ms a pair with 4 at a time (median of 7), 0.31-0.44 ms
        with 1, 8 or 16.

    Returns
    -------
    distance : Tensor of shape (n,), float32
        In [0, 2]; 0 for two identical grids of unit descriptors. Differentiable (training,
        :class:`~sigest.nn.LocalMatchTripletLoss`) through the best matches only (measured on a
        2-core CPU: a batch's local loss, 704 pairs forward and backward, in 1.6 s, against about
        twice that for a backward through every similarity).
    """
    forward, backward = local_best_matches(a, b, reach, chunk)
    return 1 - ((forward * a.float().norm(dim=3)).sum((1, 2)) + (backward * b.float().norm(dim=3)).sum((1, 2))) / 2


def _unit(descriptors):
    """(n, P, C) -> the same of unit norm (zero rows stay zero)."""
    return descriptors / descriptors.norm(dim=2, keepdim=True).clamp_min(1e-12)


def _gather_positions(descriptors, index):
    """descriptors (n, P, C) at positions index (n, Q) -> (n, Q, C)."""
    return torch.gather(descriptors, 1, index[..., None].expand(-1, -1, descriptors.shape[2]))
