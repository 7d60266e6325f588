"""In-memory frames as torch tensors: conversion, layout and value range."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from easycache.metrics.common import VideoMetricsError


def as_tensor(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def to_unit_float(x):
    import torch

    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    return x.to(torch.float32)


def normalize_frames(x, layout: str, value_range: Tuple[float, float], clamp: bool, name: str):
    """Bring in-memory frames to THWC, uint8 or float32 in [0, 1] (same device)."""
    import torch

    t = as_tensor(x)
    if t.ndim != 4:
        raise VideoMetricsError(f"{name} frames must be 4-D ({layout}), got shape {tuple(t.shape)}")
    layout = layout.upper()
    if layout == "TCHW":
        t = t.permute(0, 2, 3, 1)
    elif layout == "CTHW":
        t = t.permute(1, 2, 3, 0)
    elif layout != "THWC":
        raise VideoMetricsError(f"unknown layout {layout!r} (THWC, TCHW or CTHW)")
    if t.shape[-1] != 3:
        raise VideoMetricsError(f"{name} frames must have 3 RGB channels in layout {layout}, got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise VideoMetricsError(f"{name} frames must be uint8 or floating point, got {t.dtype}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if clamp:
        t = t.clamp(lo, hi)
    else:
        tmin, tmax = float(t.min()), float(t.max())
        tol = 1e-3 * (hi - lo)
        if tmin < lo - tol or tmax > hi + tol or math.isnan(tmin) or math.isnan(tmax):
            raise VideoMetricsError(
                f"{name} frames have values in [{tmin:.4g}, {tmax:.4g}], outside value_range [{lo:g}, {hi:g}] "
                f"(pass value_range=(-1, 1) for [-1, 1] tensors, or clamp=True)"
            )
        t = t.clamp(lo, hi)
    if (lo, hi) != (0.0, 1.0):
        t = (t - lo) / (hi - lo)
    return t
