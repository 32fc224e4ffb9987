"""Training-time augmentation of preprocessed signatures, on tensors, on whatever device they live."""

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InkJitter", "SignatureAugment"]


class SignatureAugment(nn.Module):
    """Random small affine distortions and stroke-width changes, drawn per image.

    What a writer's hand and a scanner change between two genuine signatures: a few degrees of
    rotation, slant (shear), size, position, and pen width. Applied to a batch of preprocessed
    images (ink bright on a dark background) during training only.

    Parameters
    ----------
    rotation : float, default=3.0
        Largest rotation in degrees (uniform in [-rotation, rotation]).
    shear : float, default=0.1
        Largest horizontal shear (slant), as a fraction of the height.
    scale : tuple of float, default=(0.9, 1.05)
        Range of the zoom factor.
    translate : float, default=0.03
        Largest shift, as a fraction of each side.
    stroke : float, default=0.2
        Probability of thickening the strokes by one pixel (a wider pen). Thinning is not offered:
        at network resolution strokes are one or two pixels wide and would vanish.
    p : float, default=1.0
        Probability that an image is distorted at all; the others pass unchanged. Resampling blurs
        thin strokes a little, so ``p < 1`` keeps sharp images, like those at inference, in training.
    elastic : float, default=0.0
        Largest displacement of a smooth random warp, as a fraction of the height (0: no warp). Each
        image's field is drawn uniformly on a coarse grid of 3 x 5 nodes and interpolated bicubically
        between them, so parts of a signature stretch or bend a little against each other, as between
        two genuine signatures of one writer.

    Shape
    -----
    - Input: (N, C, H, W), float.
    - Output: (N, C, H, W), same dtype and device.
    """

    def __init__(self, rotation=3.0, shear=0.1, scale=(0.9, 1.05), translate=0.03, stroke=0.2, p=1.0, elastic=0.0):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if elastic < 0.0:
            raise ValueError(f"elastic must be a displacement >= 0, got {elastic!r}")
        self.p = p
        self.elastic = elastic
        self.rotation = rotation
        self.shear = shear
        self.scale = scale
        self.translate = translate
        self.stroke = stroke

    def forward(self, x, generator=None):
        n, _, height, width = x.shape

        def uniform(low, high):
            return low + (high - low) * torch.rand(n, generator=generator)

        angle = uniform(-self.rotation, self.rotation) * math.pi / 180
        shear = uniform(-self.shear, self.shear)
        zoom = uniform(*self.scale)
        aspect = width / height
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([
            torch.stack([cos, -sin / aspect + shear, uniform(-2 * self.translate, 2 * self.translate)], dim=1),
            torch.stack([sin * aspect, cos, uniform(-2 * self.translate, 2 * self.translate)], dim=1),
        ], dim=1).to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if self.elastic:
            grid = grid + self._warp(n, height, width, generator, x.device).to(x.dtype)
        distorted = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        thicken = torch.rand(n, generator=generator).to(x.device).view(n, 1, 1, 1) < self.stroke
        distorted = torch.where(thicken, F.max_pool2d(distorted, 3, stride=1, padding=1), distorted)
        keep = torch.rand(n, generator=generator).to(x.device).view(n, 1, 1, 1) >= self.p
        return torch.where(keep, x, distorted)

    def _warp(self, n, height, width, generator, device):
        """Smooth random displacements in grid_sample's coordinates (-1 to 1 across each side): (n, height, width, 2),
        interpolated on ``device`` (drawn on the CPU, where ``generator`` lives)."""
        nodes = self.elastic * (2 * torch.rand(n, 2, 3, 5, generator=generator) - 1)  # fractions of the height
        field = F.interpolate(nodes.to(device), size=(height, width), mode="bicubic", align_corners=True)
        to_grid = torch.tensor([2.0 * height / width, 2.0], device=device).view(1, 2, 1, 1)  # x, y as grid_sample reads
        return (field * to_grid).permute(0, 2, 3, 1)


class InkJitter(nn.Module):
    """Multiply each image's ink intensity by a random factor: a lighter or darker pen, another scanner's contrast.

    Preprocessed images have bright ink on a zero background, so one factor per image scales every stroke's
    darkness and leaves the background at zero; values are clipped to [0, 1] (a darker pen saturates the darkest
    strokes). Applied during training only.

    Parameters
    ----------
    factor : tuple of float, default=(0.6, 1.2)
        Range of the factor, drawn uniformly per image.
    p : float, default=0.5
        Probability that an image is changed at all; the others keep their scanned intensity.

    Shape
    -----
    - Input: (N, C, H, W), float in [0, 1].
    - Output: (N, C, H, W), same dtype and device.
    """

    def __init__(self, factor=(0.6, 1.2), p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        if not 0.0 < factor[0] <= factor[1]:
            raise ValueError(f"factor must be a range (low, high) with 0 < low <= high, got {factor!r}")
        self.factor = factor
        self.p = p

    def forward(self, x, generator=None):
        n = x.shape[0]
        low, high = self.factor
        factor = low + (high - low) * torch.rand(n, generator=generator)
        change = torch.rand(n, generator=generator) < self.p
        factor = torch.where(change, factor, 1.0).to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)
        return (x * factor).clamp(0.0, 1.0)
