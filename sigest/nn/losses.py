"""Triplet loss on explicit triplets or on triplets mined inside a batch."""

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from torch import nn

from .registry import register_loss

__all__ = ["TripletLoss", "ProxyAnchorLoss", "identity_labels"]


def identity_labels(writers, genuine):
    """One class per writer's genuine signatures and one per writer's skilled forgeries.

    Parameters
    ----------
    writers : LongTensor of shape (N,)
        Writer codes (>= 0); for a forgery, the writer it imitates.
    genuine : BoolTensor of shape (N,)

    Returns
    -------
    labels : LongTensor of shape (N,)
        ``writer`` for genuine signatures, ``writer + offset`` for forgeries, so that a forgery of
        writer w is a negative for w's genuine anchors.
    """
    offset = int(writers.max()) + 1 if writers.numel() else 0
    return torch.where(genuine, writers, writers + offset)


class TripletLoss(nn.Module):
    """Margin triplet loss ``mean(relu(d(a, p) - d(a, n) + margin))``.

    Parameters
    ----------
    margin : float, default=0.2
        Distance margin between the positive and the negative.
    distance : {"euclidean", "cosine"}, default="euclidean"
        Euclidean distance, or cosine distance ``1 - cos``.
    mining : {"batch_hard", "semi_hard", "all"}, default="batch_hard"
        How :meth:`online` picks triplets inside a batch: the hardest positive and negative of each
        anchor (pytorch-metric-learning's ``BatchHardMiner``), every semi-hard triplet, or every
        valid triplet (``TripletMarginMiner``).

    Shape
    -----
    - ``forward(anchor, positive, negative)``: three (N, D) tensors -> scalar.
    - ``online(embeddings, writers, genuine)``: (N, D), (N,), (N,) -> scalar; anchors are
      genuine signatures only, negatives are other writers' signatures and the anchor writer's
      skilled forgeries.
    """

    def __init__(self, margin=0.2, distance="euclidean", mining="batch_hard"):
        super().__init__()
        if distance not in ("euclidean", "cosine"):
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        if mining not in ("batch_hard", "semi_hard", "all"):
            raise ValueError(f"mining must be 'batch_hard', 'semi_hard' or 'all', got {mining!r}")
        self.margin = margin
        self.distance = distance
        self.mining = mining
        measure = distances.LpDistance() if distance == "euclidean" else distances.CosineSimilarity()
        if mining == "batch_hard":
            self.miner = miners.BatchHardMiner(distance=measure)
        else:
            kind = "semihard" if mining == "semi_hard" else "all"
            self.miner = miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=measure)

    def pair_distance(self, a, b):
        """Row-wise distance of two (N, D) tensors: (N,)."""
        if self.distance == "euclidean":
            return (a - b).pow(2).sum(dim=1).clamp_min(1e-12).sqrt()
        return 1.0 - F.cosine_similarity(a, b, dim=1)

    def forward(self, anchor, positive, negative):
        gap = self.pair_distance(anchor, positive) - self.pair_distance(anchor, negative)
        return F.relu(gap + self.margin).mean()

    def mine(self, embeddings, writers, genuine):
        """Triplet indices ``(a, p, n)`` mined in the batch, anchors restricted to genuine signatures."""
        labels = identity_labels(writers, genuine)
        a, p, n = self.miner(embeddings, labels)
        keep = genuine[a]
        return a[keep], p[keep], n[keep]

    def online(self, embeddings, writers, genuine):
        """Loss over the triplets mined in the batch; zero (with a gradient) if none can be mined."""
        a, p, n = self.mine(embeddings, writers, genuine)
        if a.numel() == 0:
            return embeddings.sum() * 0.0
        return self(embeddings[a], embeddings[p], embeddings[n])


register_loss("triplet")(TripletLoss)


@register_loss("proxy_anchor")
class ProxyAnchorLoss(nn.Module):
    """Proxy-Anchor loss (pytorch-metric-learning) with one proxy per writer and one per writer's forgeries.

    Each training writer's genuine signatures are pulled towards a learned proxy and pushed from
    every other proxy, including the proxy of that writer's own skilled forgeries, so that the
    embedding learns what separates a writer from a skilled imitation.

    Parameters
    ----------
    num_writers : int
        Writers in the training data (writer codes 0..num_writers-1).
    embedding_dim : int, default=128
        Size of the embeddings (the network's ``embedding_dim``).
    margin : float, default=0.1
    alpha : float, default=32
        Scale of the similarities.

    Shape
    -----
    - ``online(embeddings, writers, genuine)``: (N, D), (N,), (N,) -> scalar.
    """

    def __init__(self, num_writers, embedding_dim=128, margin=0.1, alpha=32):
        super().__init__()
        self.num_writers = num_writers
        self.loss = losses.ProxyAnchorLoss(2 * num_writers, embedding_dim, margin=margin, alpha=alpha)

    def online(self, embeddings, writers, genuine):
        if int(writers.max()) >= self.num_writers:
            raise ValueError(f"writer code {int(writers.max())} >= num_writers={self.num_writers}")
        labels = torch.where(genuine, writers, writers + self.num_writers)
        return self.loss(embeddings, labels)
