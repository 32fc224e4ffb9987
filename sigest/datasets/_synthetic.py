"""Procedural signatures: a small data set that needs no download.

Each writer owns a *style*: one to three pen-down strokes, each a cursive trajectory whose letters
are loops and humps of writer-specific heights, plus an optional flourish, a slant and a stroke
width. A genuine sample redraws the style with natural variation (small affine jitter, smooth local
deformation, width and pressure change). A skilled forgery imitates it: same strokes and letters,
but drifted letter heights and widths, other proportions and slant, tremor and hesitation blobs.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from sklearn.utils import Bunch, check_random_state

__all__ = ["make_signatures", "save_signatures"]

_POINTS_PER_STROKE = 360
_SUPERSAMPLE = 3


def _writer_style(rng):
    """Draw the parameters that define one writer's signature."""
    strokes = []
    x = 0.0
    for k in range(rng.randint(1, 4)):
        n_letters = rng.randint(3, 9)
        length = n_letters * rng.uniform(0.06, 0.1)
        strokes.append(
            {
                "x0": x,
                "length": length,
                "n_letters": n_letters,
                "phase": rng.uniform(0, 2 * np.pi),
                "loop": rng.uniform(0.0, 2.2, n_letters + 1),
                "widths": rng.uniform(0.5, 1.5, n_letters),
                "up": np.r_[rng.uniform(0.9, 1.8) if k == 0 else rng.uniform(0.3, 1.2),
                            rng.uniform(0.2, 1.2, n_letters)],
                "down": np.where(rng.rand(n_letters + 1) < 0.25, rng.uniform(0.5, 1.3, n_letters + 1),
                                 rng.uniform(0.1, 0.35, n_letters + 1)),
                "rise": rng.uniform(-0.15, 0.15),
            }
        )
        x += length + rng.uniform(0.04, 0.15)
    flourish = None
    if rng.rand() < 0.75:
        flourish = {"dip": rng.uniform(0.25, 0.6), "reach": rng.uniform(0.3, 1.0), "kick": rng.uniform(-0.2, 0.3)}
    return {
        "strokes": strokes,
        "flourish": flourish,
        "slant": rng.uniform(-0.4, 0.5),
        "amplitude": rng.uniform(0.07, 0.12),
        "aspect": 1.0,
        "width": rng.uniform(0.8, 1.6),
        "pressure": rng.uniform(0.0, 0.5),
    }


def _trajectory(stroke, amplitude):
    """Pen path of one stroke, in unit coordinates (y up): array of shape (n_points, 2)."""
    t = np.linspace(0.0, 1.0, _POINTS_PER_STROKE)
    bounds = np.r_[0.0, np.cumsum(stroke["widths"])] / np.sum(stroke["widths"])
    letter = np.interp(t, bounds, np.arange(len(bounds)))
    phase = 2 * np.pi * letter + stroke["phase"]
    knots = np.arange(len(stroke["up"]))
    up, down = np.interp(letter, knots, stroke["up"]), np.interp(letter, knots, stroke["down"])
    wave = np.sin(phase)
    radius = np.interp(letter, knots, stroke["loop"]) * stroke["length"] / (2 * np.pi * stroke["n_letters"])
    x = stroke["x0"] + stroke["length"] * t - radius * np.cos(phase)
    y = amplitude * np.where(wave > 0, up, down) * wave + stroke["rise"] * stroke["length"] * t
    return np.column_stack([x, y])


def _flourish(flourish, points, amplitude):
    """A sweeping quadratic curve from the end of the signature back under it: (n, 2)."""
    start, end = points[-1], points[0]
    left = end[0] + (1 - flourish["reach"]) * (start[0] - end[0])
    control = np.array([start[0] + 0.1, start[1] - flourish["dip"] * 4 * amplitude])
    target = np.array([left, start[1] - flourish["dip"] * 2 * amplitude + flourish["kick"] * amplitude])
    t = np.linspace(0, 1, _POINTS_PER_STROKE // 2)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * target


def _perturb_style(style, rng, scale):
    """Copy of ``style`` with letter shapes, widths and slant drifted by ``scale`` (0 = identical)."""
    strokes = []
    for s in style["strokes"]:
        strokes.append(
            {
                **s,
                "length": s["length"] * (1 + scale * rng.normal(0, 0.5)),
                "phase": s["phase"] + scale * rng.normal(0, 1.5),
                "loop": np.maximum(0.0, s["loop"] * (1 + scale * rng.normal(0, 0.8, len(s["loop"])))),
                "widths": s["widths"] * np.exp(scale * rng.normal(0, 1.0, len(s["widths"]))),
                "up": s["up"] * (1 + scale * rng.normal(0, 1.0, len(s["up"]))),
                "down": s["down"] * (1 + scale * rng.normal(0, 1.0, len(s["down"]))),
                "rise": s["rise"] + scale * rng.normal(0, 0.3),
            }
        )
    flourish = style["flourish"]
    if flourish is not None:
        flourish = {k: v * (1 + scale * rng.normal(0, 0.8)) for k, v in flourish.items()}
    return {
        **style,
        "strokes": strokes,
        "flourish": flourish,
        "slant": style["slant"] + scale * rng.normal(0, 0.8),
        "aspect": style["aspect"] * np.exp(scale * rng.normal(0, 0.8)),
    }


def _sample_paths(style, rng, *, tremor, jitter):
    """Pen paths of one sample, with affine jitter, smooth deformation and tremor: list of (n, 2)."""
    paths = [_trajectory(s, style["amplitude"]) for s in style["strokes"]]
    if style["flourish"] is not None:
        paths.append(_flourish(style["flourish"], np.vstack(paths), style["amplitude"]))
    angle = rng.normal(0, jitter * 0.05)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1.0, style["slant"]], [0.0, style["aspect"]]])
    waves = rng.normal(0, 1, (3, 4))
    out = []
    for path in paths:
        path = path @ (rotation @ shear).T
        for a, b, c, d in waves:
            path = path + jitter * 0.006 * np.sin(2 * np.pi * (1.5 + abs(a)) * path[:, ::-1] + [b * 3, c * 3]) * d
        if tremor:
            walk = np.cumsum(rng.normal(0, 1, path.shape), axis=0)
            smooth = np.column_stack([np.convolve(walk[:, i], np.ones(25) / 25, "same") for i in range(2)])
            path = path + tremor * 0.0025 * (walk - smooth)
        out.append(path)
    return out


def _render(paths, style, rng, image_size, *, blobs):
    """Draw pen paths on paper: uint8 array of shape image_size, dark ink on light paper."""
    height, width = image_size
    points = np.vstack(paths)
    lo, hi = points.min(axis=0), points.max(axis=0)
    fill = rng.uniform(0.7, 0.9)
    scale = fill * min(width / (hi[0] - lo[0] + 1e-9), height / (hi[1] - lo[1] + 1e-9))
    offset = rng.uniform(0.0, 1.0, 2) * ([width, height] - scale * (hi - lo))
    big = (width * _SUPERSAMPLE, height * _SUPERSAMPLE)
    canvas = Image.new("L", big, 0)
    draw = ImageDraw.Draw(canvas)
    base_width = style["width"] * _SUPERSAMPLE * max(1.0, min(image_size) / 64)
    for path in paths:
        xy = (path - lo) * scale + offset
        xy[:, 1] = height - xy[:, 1]
        xy *= _SUPERSAMPLE
        speed = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        pressure = 1 + style["pressure"] * (1 - speed / (speed.max() + 1e-9))
        for k in range(len(xy) - 1):
            draw.line([tuple(xy[k]), tuple(xy[k + 1])], fill=255, width=max(1, round(base_width * pressure[k])))
    for _ in range(blobs):
        cx, cy = ((paths[rng.randint(len(paths))][rng.randint(_POINTS_PER_STROKE // 2)] - lo) * scale + offset)
        cy = height - cy
        r = base_width * rng.uniform(0.9, 1.6)
        draw.ellipse([cx * _SUPERSAMPLE - r, cy * _SUPERSAMPLE - r, cx * _SUPERSAMPLE + r, cy * _SUPERSAMPLE + r], fill=255)
    alpha = np.asarray(canvas.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255.0
    paper = rng.uniform(225, 250) + rng.normal(0, 3, (height, width))
    ink = rng.uniform(20, 80)
    return np.clip(paper * (1 - alpha) + ink * alpha, 0, 255).astype(np.uint8)


def make_signatures(n_writers=20, n_genuine=12, n_forged=8, *, image_size=(120, 240), random_state=None):
    """Generate procedural signatures of several writers, genuine and skilled forgeries.

    Parameters
    ----------
    n_writers : int, default=20
        Number of writers.
    n_genuine : int, default=12
        Genuine signatures per writer.
    n_forged : int, default=8
        Skilled forgeries per writer (each by an imitation of that writer's style).
    image_size : tuple of int (height, width), default=(120, 240)
        Size of each image in pixels.
    random_state : int, RandomState instance or None, default=None
        Seed: the same seed gives the same images.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``images`` : ndarray of shape (n_images, height, width), uint8, dark ink on light paper;
        ``writer`` : ndarray of shape (n_images,), str writer ids ``"w000"``, ...;
        ``genuine`` : ndarray of shape (n_images,), bool;
        ``table`` : pandas.DataFrame with columns ``image`` (the 2-D arrays), ``writer`` and
        ``genuine``, the input of :func:`make_pairs` and :func:`make_triplets`;
        ``DESCR`` : str.

    Examples
    --------
    >>> from sigest.datasets import make_signatures
    >>> data = make_signatures(n_writers=3, n_genuine=4, n_forged=2, image_size=(60, 120), random_state=0)
    >>> data.images.shape, data.images.dtype.name, int(data.genuine.sum())
    ((18, 60, 120), 'uint8', 12)
    """
    for name, value in (("n_writers", n_writers), ("n_genuine", n_genuine), ("n_forged", n_forged)):
        if int(value) != value or value < (1 if name != "n_forged" else 0):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    image_size = tuple(int(s) for s in image_size)
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(f"image_size must be (height, width) of at least 16 pixels, got {image_size!r}")
    rng = check_random_state(random_state)
    images, writers, genuine = [], [], []
    for w in range(n_writers):
        style = _writer_style(rng)
        for g in range(n_genuine + n_forged):
            is_genuine = g < n_genuine
            if is_genuine:
                sample = _perturb_style(style, rng, 0.04)
                sample["width"] = style["width"] * rng.uniform(0.85, 1.15)
                paths = _sample_paths(sample, rng, tremor=0.0, jitter=1.0)
                blobs = 0
            else:
                sample = _perturb_style(style, rng, rng.uniform(0.14, 0.25))
                sample["width"] = style["width"] * rng.uniform(0.9, 1.4)
                sample["pressure"] = style["pressure"] * 0.3
                paths = _sample_paths(sample, rng, tremor=rng.uniform(0.3, 1.0), jitter=1.0)
                blobs = rng.randint(1, 5)
            images.append(_render(paths, sample, rng, image_size, blobs=blobs))
            writers.append(f"w{w:03d}")
            genuine.append(is_genuine)
    images = np.stack(images)
    writer = np.array(writers, dtype=object)
    genuine = np.array(genuine)
    table = pd.DataFrame({"image": list(images), "writer": writer, "genuine": genuine})
    return Bunch(images=images, writer=writer, genuine=genuine, table=table, DESCR=__doc__)


def save_signatures(data, root):
    """Write generated signatures to disk in the generic layout.

    Parameters
    ----------
    data : sklearn.utils.Bunch
        The output of :func:`make_signatures`.
    root : str or path-like
        Folder to write into (created if missing); images go to
        ``root/<writer>/genuine/<writer>_g<k>.png`` and ``root/<writer>/forged/<writer>_f<k>.png``.

    Returns
    -------
    root : pathlib.Path
        The folder written, ready for :func:`load_signatures`.
    """
    root = Path(root)
    counts = {}
    for image, writer, genuine in zip(data.images, data.writer, data.genuine):
        kind = "genuine" if genuine else "forged"
        k = counts[writer, kind] = counts.get((writer, kind), 0) + 1
        folder = root / writer / kind
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{writer}_{kind[0]}{k:02d}.png")
    return root
