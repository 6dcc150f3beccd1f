"""Synthetic data for the reproduction experiments: a 2-D "image" function and thin curvilinear structures."""
from __future__ import annotations

import numpy as np

from dslc.train.data import Dataset, Split


def image_function(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The depth-versus-width target: a smooth wave plus a soft ring edge on [-1, 1]^2, values in about [-1, 1]."""
    return 0.5 * np.sin(3 * x) * np.cos(3 * y) + 0.5 * np.tanh(8 * (x ** 2 + y ** 2 - 0.5))


def image_dataset(side: int = 40) -> Dataset:
    """The function sampled on a side x side pixel grid (the training set is the whole image)."""
    g = np.linspace(-1, 1, side, dtype=np.float32)
    xx, yy = np.meshgrid(g, g, indexing="xy")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float32)
    z = image_function(pts[:, 0], pts[:, 1]).reshape(-1, 1).astype(np.float32)
    return Dataset("image2d", Split([pts], [z]), None, task="regression",
                   info={"function": "0.5 sin(3x) cos(3y) + 0.5 tanh(8 (x^2 + y^2 - 0.5))", "grid": side})


def _curve_mask(rng: np.random.Generator, side: int) -> np.ndarray:
    """One to three thin random curves (cubic Bezier, 1 px wide) drawn by dense sampling."""
    mask = np.zeros((side, side), np.float32)
    for _ in range(rng.integers(1, 4)):
        p = rng.uniform(-0.1, 1.1, (4, 2)) * (side - 1)
        t = np.linspace(0, 1, side * 8)[:, None]
        pts = ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3])
        ij = np.rint(pts).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < side) & (ij[:, 1] >= 0) & (ij[:, 1] < side)
        mask[ij[ok, 1], ij[ok, 0]] = 1.0
    return mask


def curvilinear(n: int, side: int = 32, seed: int = 0, noise: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Images of thin curves (brightness 0.6-1.0) on a smooth random background with Gaussian noise, and masks."""
    rng = np.random.default_rng(seed)
    xs = np.empty((n, 1, side, side), np.float32)
    ys = np.empty((n, 1, side, side), np.float32)
    g = np.linspace(0, 1, side, dtype=np.float32)
    for i in range(n):
        m = _curve_mask(rng, side)
        a, b = rng.uniform(-0.3, 0.3, 2)
        background = a * g[None, :] + b * g[:, None]
        img = background + rng.uniform(0.6, 1.0) * m + rng.normal(0, noise, (side, side))
        xs[i, 0], ys[i, 0] = img, m
    return xs, ys


def curvilinear_dataset(n_train: int, n_test: int, side: int = 32) -> Dataset:
    xtr, ytr = curvilinear(n_train, side, seed=1)
    xte, yte = curvilinear(n_test, side, seed=2)
    return Dataset("curves", Split([xtr], [ytr]), Split([xte], [yte]), task=None,
                   info={"side": side, "noise": 0.35})
