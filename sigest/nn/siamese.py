"""The Siamese network: one shared ResNet embedding every signature of a pair or triplet."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import fold_batch_norms
from .matching import weighted_local_descriptors
from .registry import get_attention, get_backbone

__all__ = ["SiameseResNet"]


def _whitened(x, whitening):
    """``normalize(normalize(x) @ whitening)`` over the last dimension.

    x (..., d) with whitening (d, d), or x (N, S, d) with one map per position S, whitening (S, d, d).
    """
    x = F.normalize(x, dim=-1).unsqueeze(-2) @ whitening
    return F.normalize(x.squeeze(-2), dim=-1)


def _spread(feature_map):
    """Each channel's standard deviation over the positions of a map (N, C, H, W) -> (N, C): zero for a map of one
    position, and an empty batch gives (0, C), without torch.std's warnings."""
    flat = feature_map.flatten(2).float()  # float32 under autocast too: a variance in bfloat16 loses digits
    return (flat - flat.mean(2, keepdim=True)).square().mean(2).sqrt()


def _grid(feature_map):
    """A map (N, C, H, W) as a grid of descriptors (N, H, W, C), float32 (under autocast too)."""
    return feature_map.permute(0, 2, 3, 1).float()


class SiameseResNet(nn.Module):
    """ResNet backbone with spatial attention after chosen stages and an L2-normalised embedding.

    Parameters
    ----------
    backbone : str, default="resnet_tiny"
        Registered backbone name (see :func:`sigest.nn.list_backbones`), built without weights;
        the default is the backbone of sigest's measured recipe and of the shipped model.
    embedding_dim : int, default=128
        Size of the embedding.
    attention : str, default="spatial"
        Registered attention block inserted after each stage in ``attention_stages``.
    attention_stages : sequence of int, default=(3, 4)
        1-based stage numbers followed by attention.
    in_channels : int, default=1
        Channels of the input images.
    dropout : float, default=0.0
        Dropout before the projection.

    Shape
    -----
    - Input: (N, C, H, W) for a batch of images, or (N, k, C, H, W) for pairs (k=2) or triplets
      (k=3); every image goes through the same weights.
    - Output: (N, embedding_dim) or (N, k, embedding_dim), each row of unit L2 norm.

    After training, :meth:`set_whitening` can put a fixed linear map after the projection (the
    ``whitening`` buffer, (embedding_dim, embedding_dim), the identity until set; it is saved
    with the weights; weights saved without it load with the identity): the embedding is then
    ``normalize(normalize(projection) @ whitening)``.

    :meth:`views` reads four more views of each image off the same forward pass, for verifiers that
    compare more than the embedding (the ``extra_views`` of :class:`sigest.VotingVerifier` and
    :class:`sigest.LogisticSiameseRegression`): the penultimate stage's map average-pooled, the last
    map pooled over ``n_strips`` vertical strips, each strip through the embedding's projection, and
    the ``texture_stage``-th stage's map summarised by each channel's standard deviation over its
    positions (how unevenly a stroke feature is spread: a texture statistic of the strokes). Each
    has its own whitening buffer (``penultimate_whitening``, (C, C); ``strip_whitening``,
    (n_strips, embedding_dim, embedding_dim); ``texture_whitening``, (C_texture, C_texture)), set
    by :meth:`set_view_whitening`. The fourth, ``"local"``, keeps the same stage's map as a grid of
    local descriptors, each centred on the training images' mean descriptor (``local_mean``, (C_texture,),
    zero until set) and weighted by its activation, for :func:`sigest.nn.local_match_distance`.

    Convolution weights and activations are kept channels-last (NHWC) in memory, the layout
    oneDNN's CPU kernels prefer (measured on 2 CPU cores: 1.8x faster inference, 1.45x faster
    training than NCHW); values and shapes are as with the default layout.
    """

    n_strips = 4
    texture_stage = 2  # 1-based stage whose map gives the texture view and the local descriptors

    def __init__(self, backbone="resnet_tiny", embedding_dim=128, attention="spatial", attention_stages=(3, 4),
                 in_channels=1, dropout=0.0):
        super().__init__()
        self.backbone = get_backbone(backbone, in_channels=in_channels)
        n_stages = len(self.backbone.stages)
        bad = [s for s in attention_stages if not 1 <= s <= n_stages]
        if bad:
            raise ValueError(f"attention_stages must be in 1..{n_stages}, got {bad}")
        self.attention = nn.ModuleDict({str(s): get_attention(attention) for s in attention_stages})
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(self.backbone.stage_channels[-1], embedding_dim)
        self.register_buffer("whitening", torch.eye(embedding_dim))
        self.register_buffer("penultimate_whitening", torch.eye(self.backbone.stage_channels[-2]))
        self.register_buffer("strip_whitening", torch.eye(embedding_dim).repeat(self.n_strips, 1, 1))
        self.register_buffer("texture_whitening", torch.eye(self.backbone.stage_channels[self.texture_stage - 1]))
        self.register_buffer("local_mean", torch.zeros(self.backbone.stage_channels[self.texture_stage - 1]))
        self.to(memory_format=torch.channels_last)

    def _feature_maps(self, x):
        """Every stage's map of a batch (N, C, H, W), first to last, attention applied."""
        x = self.backbone.stem(x.contiguous(memory_format=torch.channels_last))
        maps = []
        for number, stage in enumerate(self.backbone.stages, start=1):
            x = stage(x)
            if str(number) in self.attention:
                x = self.attention[str(number)](x)
            maps.append(x)
        return maps

    def embed(self, x):
        """Embed a batch of images: (N, C, H, W) -> (N, embedding_dim), unit norm."""
        return self._training_embedding(self._feature_maps(x)[-1])

    def _training_embedding(self, last):
        """The last stage's map (N, C, H, W) -> the embedding, pooled, through dropout (in training) and the projection."""
        return self._embedding(self.dropout(self.pool(last).flatten(1)))

    def _embedding(self, pooled):
        """Pooled last map (N, C) -> the whitened unit-norm embedding (N, embedding_dim)."""
        return _whitened(self.projection(pooled), self.whitening)

    def views(self, x, raw_local=False):
        """Five views of each image from one forward pass (inference: no dropout).

        Parameters
        ----------
        x : Tensor of shape (N, C, H, W)
        raw_local : bool, default=False
            Give ``"local"`` as the map's descriptors themselves (N, H', W', C_texture), neither
            centred nor normalised nor weighted: what ``local_mean`` is the mean of.

        Returns
        -------
        views : dict of Tensor
            ``"embedding"`` (N, embedding_dim), as :meth:`embed` gives it; ``"penultimate"``
            (N, C_penultimate), the penultimate stage's map average-pooled; ``"strips"``
            (N, n_strips, embedding_dim), the last map average-pooled over vertical strips, left
            to right (:func:`torch.nn.functional.adaptive_avg_pool2d`'s bins: they overlap when
            the map is narrow), each through the projection; ``"texture"`` (N, C_texture), the
            standard deviation of each channel of stage ``texture_stage``'s map over its positions.
            Every row is normalised, whitened by its buffer, and normalised again. ``"local"``
            (N, H', W', C_texture), the same map's positions (H' x W', e.g. 19 x 28 for resnet_tiny at
            150x220): each position's descriptor minus ``local_mean``, normalised, times its weight
            (its norm before centring over the image's total), as
            :func:`~sigest.nn.local_match_distance` compares them.
        """
        maps = self._feature_maps(x)
        penultimate, last = maps[-2], maps[-1]
        strips = F.adaptive_avg_pool2d(last, (1, self.n_strips)).flatten(2).transpose(1, 2)  # (N, n_strips, C)
        return {
            "embedding": self._embedding(last.mean((2, 3))),
            "penultimate": _whitened(penultimate.mean((2, 3)), self.penultimate_whitening),
            "strips": _whitened(self.projection(strips), self.strip_whitening),
            "texture": _whitened(_spread(maps[self.texture_stage - 1]), self.texture_whitening),
            "local": (_grid(maps[self.texture_stage - 1]) if raw_local
                      else weighted_local_descriptors(_grid(maps[self.texture_stage - 1]), self.local_mean)),
        }

    def for_inference(self):
        """A copy for inference: eval mode, every batch norm folded into the convolution before it.

        The same embeddings and views up to float rounding (:func:`~sigest.nn.fold_batch_norms`),
        fewer passes over the feature maps; the network itself is left as it is, so it can go on
        training. Measured on 2 CPU cores, the shipped resnet_tiny at 150x220 in batches of 32:
        0.49 ms an image for all views against 0.64.

        Returns
        -------
        SiameseResNet
        """
        folded = fold_batch_norms(copy.deepcopy(self).eval())
        return folded.to(memory_format=torch.channels_last)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before a whitening existed load with the identity, as BatchNorm fills in
        # num_batches_tracked for old checkpoints
        for name in ("whitening", "penultimate_whitening", "strip_whitening", "texture_whitening"):
            state_dict.setdefault(prefix + name, torch.eye(getattr(self, name).shape[-1]).expand_as(getattr(self, name)))
        state_dict.setdefault(prefix + "local_mean", torch.zeros_like(self.local_mean))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_whitening(self, whitening=None):
        """Set the map applied to the normalised projection (:func:`~sigest.nn.within_writer_whitening`).

        Parameters
        ----------
        whitening : Tensor of shape (embedding_dim, embedding_dim) or None, default=None
            None restores the identity (the embedding the network was trained to give).

        Returns
        -------
        self
        """
        d = self.whitening.shape[0]
        if whitening is None:
            whitening = torch.eye(d)
        if tuple(whitening.shape) != (d, d):
            raise ValueError(f"whitening must be of shape ({d}, {d}), got {tuple(whitening.shape)}")
        self.whitening.copy_(whitening.to(self.whitening))
        return self

    def set_view_whitening(self, penultimate=None, strips=None, texture=None, local_mean=None):
        """Set the whitening of the extra :meth:`views` (None restores the identity) and the local view's centre.

        Parameters
        ----------
        penultimate : Tensor of shape (C_penultimate, C_penultimate) or None
        strips : Tensor of shape (n_strips, embedding_dim, embedding_dim) or None
        texture : Tensor of shape (C_texture, C_texture) or None
        local_mean : Tensor of shape (C_texture,) or None
            The mean of the raw local descriptors (``views(x, raw_local=True)["local"]``) over training
            images' positions; None: zero.

        Returns
        -------
        self
        """
        for buffer, value in ((self.penultimate_whitening, penultimate), (self.strip_whitening, strips),
                              (self.texture_whitening, texture)):
            identity = torch.eye(buffer.shape[-1]).expand_as(buffer)
            value = identity if value is None else torch.as_tensor(value)
            if value.shape != buffer.shape:
                raise ValueError(f"view whitening must be of shape {tuple(buffer.shape)}, got {tuple(value.shape)}")
            buffer.copy_(value.to(buffer))
        value = torch.zeros_like(self.local_mean) if local_mean is None else torch.as_tensor(local_mean)
        if value.shape != self.local_mean.shape:
            raise ValueError(f"local_mean must be of shape {tuple(self.local_mean.shape)}, got {tuple(value.shape)}")
        self.local_mean.copy_(value.to(self.local_mean))
        return self

    def forward(self, x, with_local=False):
        """Embed images, pairs or triplets; with ``with_local``, also the raw local descriptors (training them).

        Parameters
        ----------
        x : Tensor of shape (N, C, H, W) or (N, k, C, H, W)
        with_local : bool, default=False
            Also return stage ``texture_stage``'s map as a grid (N, H', W', C_texture), float32: the
            raw descriptors of the ``"local"`` view, with their gradients (images (N, C, H, W) only).

        Returns
        -------
        Tensor of shape (N, embedding_dim) or (N, k, embedding_dim), or with ``with_local`` the
        tuple (embeddings (N, embedding_dim), descriptors (N, H', W', C_texture)).
        """
        if x.dim() == 5 and not with_local:
            n, k = x.shape[:2]
            return self.embed(x.flatten(0, 1)).unflatten(0, (n, k))
        if x.dim() != 4:
            raise ValueError(f"expected (N, C, H, W){'' if with_local else ' or (N, k, C, H, W)'} input, "
                             f"got shape {tuple(x.shape)}")
        if not with_local:
            return self.embed(x)
        maps = self._feature_maps(x)
        return self._training_embedding(maps[-1]), _grid(maps[self.texture_stage - 1])
