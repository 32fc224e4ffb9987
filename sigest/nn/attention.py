"""Spatial attention: re-weight a feature map by where the ink evidence is."""

import torch
from torch import nn

from .registry import register_attention

__all__ = ["SpatialAttention"]


class SpatialAttention(nn.Module):
    """CBAM-style spatial attention block.

    The channel-wise mean and max of the input are stacked, convolved to one map, passed through a
    sigmoid and multiplied onto every channel.

    Parameters
    ----------
    kernel_size : int, default=7
        Odd size of the convolution over the pooled maps.

    Shape
    -----
    - Input: (N, C, H, W)
    - Output: (N, C, H, W), the input times a mask in (0, 1) of shape (N, 1, H, W)
    """

    def __init__(self, kernel_size=7):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def mask(self, x):
        """The attention mask of shape (N, 1, H, W), values in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x):
        return x * self.mask(x)


register_attention("spatial")(SpatialAttention)
register_attention("none")(lambda **kwargs: nn.Identity())
