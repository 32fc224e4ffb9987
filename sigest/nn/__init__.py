"""Pure PyTorch building blocks: attention, backbones, the Siamese network, losses, whitening, local matching,
registries."""

from .attention import SpatialAttention
from .augment import InkJitter, SignatureAugment
from .backbones import Backbone, fold_batch_norms, resnet_tiny
from .losses import ArcFaceLoss, LocalMatchTripletLoss, ProxyAnchorLoss, SupConLoss, TripletLoss, identity_labels
from .matching import (local_best_matches, local_match_distance, pool_local_descriptors, pooled_reach,
                       weighted_local_descriptors)
from .registry import (
    get_attention,
    get_backbone,
    get_loss,
    list_attention,
    list_backbones,
    list_losses,
    register_attention,
    register_backbone,
    register_loss,
)
from .siamese import SiameseResNet
from .whitening import within_writer_whitening

__all__ = [
    "ArcFaceLoss",
    "Backbone",
    "InkJitter",
    "LocalMatchTripletLoss",
    "ProxyAnchorLoss",
    "SupConLoss",
    "SiameseResNet",
    "SignatureAugment",
    "SpatialAttention",
    "TripletLoss",
    "fold_batch_norms",
    "get_attention",
    "get_backbone",
    "get_loss",
    "identity_labels",
    "list_attention",
    "list_backbones",
    "list_losses",
    "local_best_matches",
    "local_match_distance",
    "pool_local_descriptors",
    "pooled_reach",
    "register_attention",
    "register_backbone",
    "register_loss",
    "resnet_tiny",
    "weighted_local_descriptors",
    "within_writer_whitening",
]
