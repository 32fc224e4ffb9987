"""Pure PyTorch building blocks: attention, backbones, the Siamese network, losses, registries."""

from .attention import SpatialAttention
from .backbones import Backbone, resnet_tiny
from .losses import TripletLoss, identity_labels
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

__all__ = [
    "Backbone",
    "SiameseResNet",
    "SpatialAttention",
    "TripletLoss",
    "get_attention",
    "get_backbone",
    "get_loss",
    "identity_labels",
    "list_attention",
    "list_backbones",
    "list_losses",
    "register_attention",
    "register_backbone",
    "register_loss",
    "resnet_tiny",
]
