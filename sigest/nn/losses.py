"""Metric-learning losses in pytorch-metric-learning's convention: triplet, supervised contrastive, and the
writer-class losses Proxy-Anchor and ArcFace."""

from collections import defaultdict

import torch
from pytorch_metric_learning import distances, losses, miners, reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from .matching import local_match_distance, weighted_local_descriptors
from .registry import register_loss

__all__ = ["TripletLoss", "SupConLoss", "ProxyAnchorLoss", "ArcFaceLoss", "LocalMatchTripletLoss", "identity_labels"]


def identity_labels(writers, genuine, offset=None):
    """One class per writer's genuine signatures and one per writer's skilled forgeries.

    Parameters
    ----------
    writers : LongTensor of shape (N,)
        Writer codes (>= 0); for a forgery, the writer it imitates.
    genuine : BoolTensor of shape (N,)
    offset : int or None, default=None
        Added to a forgery's writer code: the number of writers of the whole training set keeps
        the classes stable from batch to batch (as proxies need); None uses ``writers.max() + 1``.

    Returns
    -------
    labels : LongTensor of shape (N,)
        ``writer`` for genuine signatures, ``writer + offset`` for forgeries, so that a forgery of
        writer w is a negative for w's genuine anchors.
    """
    if offset is None:
        offset = int(writers.max()) + 1 if writers.numel() else 0
    return torch.where(genuine, writers, writers + offset)


class _LogLpDistance(distances.LpDistance):
    """The log of pytorch-metric-learning's (normalised) Euclidean distance, floored at 1e-6: the miners and
    losses built on it compare distance ratios."""

    def compute_mat(self, query_emb, ref_emb):
        return torch.log(super().compute_mat(query_emb, ref_emb).clamp_min(1e-6))

    def pairwise_distance(self, query_emb, ref_emb):
        return torch.log(super().pairwise_distance(query_emb, ref_emb).clamp_min(1e-6))


@register_loss("triplet")
class TripletLoss(nn.Module):
    """Margin triplet loss ``mean(relu(d(a, p) - d(a, n) + margin))``, in pytorch-metric-learning's convention.

    ``forward(embeddings, labels, indices_tuple)`` as pytorch-metric-learning's losses: the
    triplets are ``indices_tuple`` when given, else they are mined in the batch with ``mine``.

    Parameters
    ----------
    margin : float, default=0.2
        Distance margin between the positive and the negative.
    distance : {"euclidean", "cosine", "log_euclidean"}, default="euclidean"
        Euclidean distance, cosine distance ``1 - cos``, or the log of the Euclidean distance:
        then the loss is ``relu(log(d(a, p) / d(a, n)) + margin)``, a margin on the ratio of the
        two distances (``d(a, p) <= exp(-margin) d(a, n)``) whatever the anchor writer's own
        spread, the scale-free comparison the distance-ratio voter makes.
    mining : {"batch_hard", "semi_hard", "all"}, default="batch_hard"
        How :meth:`mine` picks triplets inside a batch: the hardest positive and negative of each
        anchor (pytorch-metric-learning's ``BatchHardMiner``), every semi-hard triplet, or every
        valid triplet (``TripletMarginMiner``).
    smooth : bool, default=False
        ``softplus(d(a, p) - d(a, n) + margin)`` instead of the hinge: the soft margin of Hermans
        et al. (2017, "In defense of the triplet loss"; best with ``margin=0``), which keeps
        pulling after the margin is met rather than falling to zero.

    Shape
    -----
    - ``forward(embeddings, labels=None, indices_tuple=None)``: (N, D), (N,), three (T,) index
      tensors -> scalar (the mean over the T triplets; zero, with a gradient, when T is 0).
    - ``mine(embeddings, labels, anchors=None)``: (N, D), (N,), (N,) bool -> three (T,) tensors.
    """

    def __init__(self, margin=0.2, distance="euclidean", mining="batch_hard", smooth=False):
        super().__init__()
        if distance not in ("euclidean", "cosine", "log_euclidean"):
            raise ValueError(f"distance must be 'euclidean', 'cosine' or 'log_euclidean', got {distance!r}")
        if mining not in ("batch_hard", "semi_hard", "all"):
            raise ValueError(f"mining must be 'batch_hard', 'semi_hard' or 'all', got {mining!r}")
        self.margin = margin
        self.distance = distance
        self.mining = mining
        self.smooth = smooth
        measure = {"euclidean": distances.LpDistance, "cosine": distances.CosineSimilarity,
                   "log_euclidean": _LogLpDistance}[distance]()
        self.loss = losses.TripletMarginLoss(margin=margin, distance=measure, smooth_loss=smooth,
                                             reducer=reducers.MeanReducer())
        if mining == "batch_hard":
            self.miner = miners.BatchHardMiner(distance=measure)
        else:
            kind = "semihard" if mining == "semi_hard" else "all"
            self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=measure)

    def mine(self, embeddings, labels, anchors=None):
        """Triplet indices ``(a, p, n)`` mined in the batch; with ``anchors`` (bool mask), anchors only there."""
        a, p, n = self.miner(embeddings, labels)
        if anchors is None:
            return a, p, n
        keep = anchors[a]
        return a[keep], p[keep], n[keep]

    def forward(self, embeddings, labels=None, indices_tuple=None):
        if indices_tuple is None:
            if labels is None:
                raise ValueError("give labels to mine triplets from, or the triplets as indices_tuple")
            indices_tuple = self.mine(embeddings, labels)
        if indices_tuple[0].numel() == 0:
            return embeddings.sum() * 0.0
        return self.loss(embeddings, labels, indices_tuple)


@register_loss("supcon")
class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al., 2020) over every pair of a batch.

    Each anchor's positives (same label) are pulled towards it against all of the batch's
    negatives at once, by a softmax over cosine similarities at ``temperature``; unlike batch-hard
    triplets, no single hardest pair decides the gradient and the loss does not reach zero once a
    margin is met. With :func:`identity_labels`, a writer's skilled forgeries are negatives for
    the writer's genuine anchors; :meth:`mine` with ``anchors`` keeps only genuine anchors, so
    forgeries of one writer by different forgers are never pulled together.

    Parameters
    ----------
    temperature : float, default=0.1
        Softmax temperature; smaller is sharper.

    Shape
    -----
    - ``forward(embeddings, labels, indices_tuple=None)``: (N, D), (N,), optionally four (T,)
      index tensors ``(anchor, positive, anchor, negative)`` of pairs -> scalar (zero, with a
      gradient, when no anchor has a positive).
    - ``mine(embeddings, labels, anchors=None)``: (N, D), (N,), (N,) bool -> the pairs.
    """

    def __init__(self, temperature=0.1):
        super().__init__()
        self.temperature = temperature
        self.loss = losses.SupConLoss(temperature=temperature)

    def mine(self, embeddings, labels, anchors=None):
        """Every positive and negative pair of the batch; with ``anchors`` (bool mask), anchored there only."""
        a1, p, a2, n = lmu.get_all_pairs_indices(labels)
        if anchors is None:
            return a1, p, a2, n
        return a1[anchors[a1]], p[anchors[a1]], a2[anchors[a2]], n[anchors[a2]]

    def forward(self, embeddings, labels=None, indices_tuple=None):
        if labels is None:
            raise ValueError("SupConLoss needs labels")
        if indices_tuple is not None and indices_tuple[0].numel() == 0:
            return embeddings.sum() * 0.0
        return self.loss(embeddings, labels, indices_tuple)


class _WriterClassLoss(nn.Module):
    """A pytorch-metric-learning loss with a learned vector per class: a class per training writer and
    one per writer's skilled forgeries (:func:`identity_labels` with ``offset=num_writers``)."""

    def __init__(self, num_writers, loss):
        super().__init__()
        self.num_writers = num_writers
        self.loss = loss

    def forward(self, embeddings, labels, indices_tuple=None):
        if labels is None or int(labels.max()) >= 2 * self.num_writers:
            raise ValueError(f"labels must be identity_labels(..., offset=num_writers) with num_writers="
                             f"{self.num_writers}; give criterion__num_writers the number of training writers")
        return self.loss(embeddings, labels)


@register_loss("proxy_anchor")
class ProxyAnchorLoss(_WriterClassLoss):
    """Proxy-Anchor loss (pytorch-metric-learning) with one proxy per writer and one per writer's forgeries.

    Each training writer's genuine signatures are pulled towards a learned proxy and pushed from
    every other proxy, including the proxy of that writer's own skilled forgeries, so that the
    embedding learns what separates a writer from a skilled imitation.

    Parameters
    ----------
    num_writers : int
        Writers in the training data (writer codes 0..num_writers-1); labels are
        :func:`identity_labels` with ``offset=num_writers``.
    embedding_dim : int, default=128
        Size of the embeddings (the network's ``embedding_dim``).
    margin : float, default=0.1
    alpha : float, default=32
        Scale of the similarities.

    Shape
    -----
    - ``forward(embeddings, labels, indices_tuple=None)``: (N, D), (N,) -> scalar; ``indices_tuple``
      is ignored (every proxy takes part).
    """

    def __init__(self, num_writers, embedding_dim=128, margin=0.1, alpha=32):
        super().__init__(num_writers, losses.ProxyAnchorLoss(2 * num_writers, embedding_dim, margin=margin,
                                                             alpha=alpha))


@register_loss("arcface")
class ArcFaceLoss(_WriterClassLoss):
    """Writer classification with an additive angular margin (ArcFace, Deng et al., 2019; pytorch-metric-learning).

    A softmax over the cosines between an embedding and a learned weight vector per class, the true
    class's angle widened by ``margin`` degrees: the classes are the training writers and, apart,
    each writer's skilled forgeries, so a forgery must sit at an angle from its writer's genuine
    signatures. Unlike a triplet loss, it has no zero-loss state in which every embedding coincides.

    Parameters
    ----------
    num_writers : int
        Writers in the training data (writer codes 0..num_writers-1); labels are
        :func:`identity_labels` with ``offset=num_writers``.
    embedding_dim : int, default=128
        Size of the embeddings (the network's ``embedding_dim``).
    margin : float, default=28.6
        Additive angular margin in degrees (28.6 degrees = 0.5 radian).
    scale : float, default=30
        Multiplies the cosines before the softmax.

    Shape
    -----
    - ``forward(embeddings, labels, indices_tuple=None)``: (N, D), (N,) -> scalar; ``indices_tuple``
      is ignored (every class takes part).
    """

    def __init__(self, num_writers, embedding_dim=128, margin=28.6, scale=30):
        super().__init__(num_writers, losses.ArcFaceLoss(2 * num_writers, embedding_dim, margin=margin, scale=scale))


class LocalMatchTripletLoss(nn.Module):
    """A batch-hard triplet loss on :func:`~sigest.nn.local_match_distance`, within each writer's images.

    For up to ``anchors_per_writer`` genuine signatures of each writer of the batch that also has
    another genuine signature and a skilled forgery there, the local match distance to each of the
    writer's other images; the loss is ``mean(relu(log(d(a, p) / d(a, n)) + margin))`` with the
    farthest genuine ``p`` and the nearest forgery ``n``: a margin on the ratio of the two, as the
    voter compares the questioned signature's distance with the references' own. It trains the
    map the ``"local"`` view reads (:meth:`sigest.nn.SiameseResNet.views`) to tell a writer's
    strokes from a skilled imitation's, place by place. The descriptors are centred on the batch's
    mean descriptor (the ``local_mean`` of training images, estimated by the batch, without gradient)
    and weighted by :func:`~sigest.nn.weighted_local_descriptors`.

    Parameters
    ----------
    margin : float, default=0.1
        Margin on the log of the distance ratio (0.1: the nearest forgery at least 1.105 times
        farther than the farthest genuine signature).
    anchors_per_writer : int, default=2
        Genuine anchors of each writer (the first in the batch's order); each costs one match of
        the writer's other images.
    reach : (int, int), default=(4, 6)
        ``local_match_distance``'s largest offset of a match.
    chunk : int, default=64
        Pairs matched at a time (memory: chunk x (H' W')^2 floats).

    Shape
    -----
    - ``forward(descriptors, writers, genuine)``: raw descriptors (N, H', W', C) (``SiameseResNet(x,
      with_local=True)``'s second output), writer codes (N,), genuine flags (N,) bool -> scalar
      (zero, with a gradient, when no writer has an anchor, a positive and a forgery).
    """

    def __init__(self, margin=0.1, anchors_per_writer=2, reach=(4, 6), chunk=64):
        super().__init__()
        self.margin = margin
        self.anchors_per_writer = anchors_per_writer
        self.reach = reach
        self.chunk = chunk

    def _pairs(self, writers, genuine):
        """(anchor, other image, anchor's slot) index lists: each anchor with every other image of its writer."""
        images = defaultdict(list)
        for i, writer in enumerate(writers.tolist()):
            images[writer].append(i)
        flags = genuine.tolist()
        anchors, others, slots = [], [], []
        for rows in images.values():
            genuine_rows = [i for i in rows if flags[i]]
            if len(genuine_rows) < 2 or len(genuine_rows) == len(rows):
                continue
            for anchor in genuine_rows[:self.anchors_per_writer]:
                rest = [i for i in rows if i != anchor]
                slots += [slots[-1] + 1 if slots else 0] * len(rest)
                anchors += [anchor] * len(rest)
                others += rest
        return anchors, others, slots

    def forward(self, descriptors, writers, genuine):
        anchors, others, slots = self._pairs(writers, genuine)
        if not anchors:
            return descriptors.sum() * 0.0
        device = descriptors.device
        local = weighted_local_descriptors(descriptors, descriptors.detach().mean((0, 1, 2)))
        anchors, others, slots = (torch.tensor(v, device=device) for v in (anchors, others, slots))
        distance = local_match_distance(local[anchors], local[others], reach=self.reach, chunk=self.chunk)
        positive = genuine[others].bool()
        n_slots = int(slots.max()) + 1
        farthest = distance.new_full((n_slots,), -torch.inf).scatter_reduce(0, slots[positive], distance[positive],
                                                                             "amax")
        nearest = distance.new_full((n_slots,), torch.inf).scatter_reduce(0, slots[~positive], distance[~positive],
                                                                          "amin")
        ratio = torch.log(farthest.clamp_min(1e-6)) - torch.log(nearest.clamp_min(1e-6))
        return torch.relu(ratio + self.margin).mean()
