"""ResNet backbones as a stem and four stages, built from torchvision without downloading weights.

torchvision is imported only when one of its ResNets is built: importing it costs about 1.2 s (a third
of ``sigest verify``'s start-up on a 2-core CPU), and the default ``resnet_tiny`` does not need it.
"""

import sys

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .registry import register_backbone

__all__ = ["Backbone", "BasicBlock", "fold_batch_norms", "resnet_tiny"]


class Backbone(nn.Module):
    """A stem followed by stages, exposing the stages for attention to be inserted between them.

    Parameters
    ----------
    stem : nn.Module
        Maps (N, in_channels, H, W) to the first stage's input.
    stages : sequence of nn.Module
        Applied in order; stage ``i`` outputs ``stage_channels[i]`` channels.
    stage_channels : sequence of int
        Output channels of each stage.
    """

    def __init__(self, stem, stages, stage_channels):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


def _from_torchvision(name, in_channels):
    import torchvision.models

    net = getattr(torchvision.models, name)(weights=None)
    conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    stem = nn.Sequential(conv1, net.bn1, net.relu, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    return Backbone(stem, stages, [_out_channels(stage) for stage in stages])


def _out_channels(stage):
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


@register_backbone("resnet18")
def _resnet18(in_channels=1):
    return _from_torchvision("resnet18", in_channels)


@register_backbone("resnet34")
def _resnet34(in_channels=1):
    return _from_torchvision("resnet34", in_channels)


@register_backbone("resnet50")
def _resnet50(in_channels=1):
    return _from_torchvision("resnet50", in_channels)


class BasicBlock(nn.Module):
    """ResNet's basic residual block, ``relu(bn2(conv2(relu(bn1(conv1(x))))) + downsample(x))``.

    The block of torchvision's ``resnet18``, with the same layers under the same names (so weights
    move between the two unchanged), defined here so that ``resnet_tiny`` needs no torchvision import.

    Parameters
    ----------
    in_planes, planes : int
        Input and output channels.
    stride : int, default=1
        Stride of the first 3x3 convolution.
    downsample : nn.Module or None, default=None
        Maps the input to the output's shape for the shortcut when they differ.
    """

    def __init__(self, in_planes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


def _stage(in_planes, planes, stride):
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(in_planes, planes, stride, downsample))


@register_backbone("resnet_tiny")
def resnet_tiny(in_channels=1, widths=(16, 32, 64, 128)):
    """A small ResNet for CPU training: one :class:`BasicBlock` per stage, narrow widths.

    Parameters
    ----------
    in_channels : int, default=1
    widths : sequence of 4 int, default=(16, 32, 64, 128)
        Channels of the four stages.

    Returns
    -------
    Backbone
        (N, in_channels, H, W) -> (N, widths[-1], H / 32, W / 32).
    """
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    stages, previous = [], widths[0]
    for i, width in enumerate(widths):
        stages.append(_stage(previous, width, 1 if i == 0 else 2))
        previous = width
    return Backbone(stem, stages, widths)


def fold_batch_norms(module):
    """Fold every batch norm that directly follows a convolution into it, in place; for inference only.

    In eval mode a batch norm is a fixed per-channel affine map, so ``bn(conv(x))`` is one
    convolution with rescaled weights and a bias: the same output up to float rounding, one pass
    less over each feature map. Folded are the convolution -> batch norm pairs of
    ``nn.Sequential`` containers (the stems, the ``downsample`` shortcuts) and of the residual
    blocks, :class:`BasicBlock` and torchvision's ``BasicBlock`` and ``Bottleneck`` (``conv1``/
    ``bn1``, ...), where the order of application is known; each folded batch norm becomes
    ``nn.Identity``.

    Parameters
    ----------
    module : nn.Module
        In eval mode (a batch norm in training mode normalises by the batch, which no fixed map does).

    Returns
    -------
    module : nn.Module
        The same module, folded.
    """
    if module.training:
        raise ValueError("fold batch norms of a module in eval mode only (module.eval())")
    blocks = (BasicBlock,)
    torchvision_resnet = sys.modules.get("torchvision.models.resnet")  # its blocks exist only once it is imported
    if torchvision_resnet is not None:
        blocks += (torchvision_resnet.BasicBlock, torchvision_resnet.Bottleneck)
    for parent in module.modules():
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            pairs = zip(names, names[1:])
        elif isinstance(parent, blocks):
            pairs = [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(parent, f"conv{i}")]
        else:
            continue
        for conv, norm in pairs:
            conv_layer, norm_layer = getattr(parent, conv), getattr(parent, norm)
            if isinstance(conv_layer, nn.Conv2d) and isinstance(norm_layer, nn.BatchNorm2d):
                setattr(parent, conv, fuse_conv_bn_eval(conv_layer, norm_layer))
                setattr(parent, norm, nn.Identity())
    return module
