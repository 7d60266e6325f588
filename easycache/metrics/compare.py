"""Comparing two in-memory videos, or two videos / GIFs / frame folders streamed from disk."""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional, Tuple, Union

from easycache.metrics.align import parse_align, plan_alignment
from easycache.metrics.common import VideoMetricsError, progress_bar, resolve_device
from easycache.metrics.core import MetricsAccumulator, VideoMetrics
from easycache.metrics.decode import VideoInfo, iter_video, probe_video
from easycache.metrics.frames import normalize_frames
from easycache.metrics.lpips import resolve_lpips


def compare_frames(
    original,
    generated,
    *,
    device=None,
    lpips: Any = "auto",
    lpips_net: str = "alex",
    lpips_weights: Optional[Union[str, os.PathLike]] = None,
    lpips_download: bool = False,
    align: Union[None, str, Iterable[str]] = "none",
    chunk_frames: int = 16,
    layout: str = "THWC",
    value_range: Tuple[float, float] = (0.0, 1.0),
    clamp: bool = False,
    progress: bool = False,
) -> VideoMetrics:
    """Metrics of two in-memory videos (numpy arrays or torch tensors, any device).

    Frames are ``[T, H, W, 3]`` by default (``layout="TCHW"`` or ``"CTHW"`` for
    others), RGB, ``uint8`` in [0, 255] or float in ``value_range`` (default
    [0, 1]; out-of-range floats raise unless ``clamp=True``). Compute on frames
    *before* video encoding when you have them: no codec loss.

    ``lpips``: ``"auto"`` (default: LPIPS if its backbone file is available,
    else ``lpips_mean=None`` with the reason in ``lpips_unavailable``), ``True``
    (raise :class:`LpipsUnavailable` instead), ``False`` (skip) or a model from
    :func:`load_lpips`. ``align``: ``"none"``, ``"trim"``, ``"resize"`` or
    ``"trim,resize"``; a frame-count or size mismatch without it raises
    :class:`VideoMetricsError`.
    """
    orig = normalize_frames(original, layout, value_range, clamp, "original")
    gen = normalize_frames(generated, layout, value_range, clamp, "generated")
    trim, resize = parse_align(align)
    oi = VideoInfo("<original frames>", "array", int(orig.shape[0]), int(orig.shape[1]), int(orig.shape[2]), None)
    gi = VideoInfo("<generated frames>", "array", int(gen.shape[0]), int(gen.shape[1]), int(gen.shape[2]), None)
    if oi.n_frames == 0 or gi.n_frames == 0:
        raise VideoMetricsError("no frames to compare (empty input)")
    n, resize_to, notes = plan_alignment(oi, gi, trim, resize, ignore_fps=True)
    dev = resolve_device(device)
    model, reason = resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    acc = MetricsAccumulator(dev, model, resize_to)
    if chunk_frames < 1:
        raise VideoMetricsError("chunk_frames must be >= 1")
    bar = progress_bar(n, progress, "frames")
    try:
        for s in range(0, n, chunk_frames):
            e = min(n, s + chunk_frames)
            acc.update(orig[s:e], gen[s:e])
            bar.update(e - s)
    finally:
        bar.close()
    res = acc.result()
    res.alignment = notes
    res.original, res.generated = oi, gi
    if res.lpips_unavailable is None:
        res.lpips_unavailable = reason
    return res


def compare_videos(
    original_path: Union[str, os.PathLike],
    generated_path: Union[str, os.PathLike],
    *,
    device=None,
    lpips: Any = "auto",
    lpips_net: str = "alex",
    lpips_weights: Optional[Union[str, os.PathLike]] = None,
    lpips_download: bool = False,
    align: Union[None, str, Iterable[str]] = "none",
    ignore_fps: bool = False,
    chunk_frames: int = 16,
    progress: Optional[bool] = None,
) -> VideoMetrics:
    """Metrics of two video files / GIFs / frame folders, streamed chunk by chunk.

    Frame count, resolution and fps are checked before any decoding; see
    :func:`compare_frames` for ``lpips`` and ``align``. ``progress=None`` shows a
    frame progress bar only when stderr is a terminal.
    """
    trim, resize = parse_align(align)
    if chunk_frames < 1:
        raise VideoMetricsError("chunk_frames must be >= 1")
    oi = probe_video(original_path, "original video")
    gi = probe_video(generated_path, "generated video")
    n, resize_to, notes = plan_alignment(oi, gi, trim, resize, ignore_fps)
    dev = resolve_device(device)
    model, reason = resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    acc = MetricsAccumulator(dev, model, resize_to)
    o_it = iter_video(oi, chunk_frames, max_frames=n, role="original video")
    g_it = iter_video(gi, chunk_frames, max_frames=n, role="generated video")
    bar = progress_bar(n, progress, "frames")
    try:
        for oc, gc in zip(o_it, g_it):
            acc.update(oc, gc)
            bar.update(len(oc))
        for it in (o_it, g_it):  # drain: raises if one of them ended early
            for _ in it:
                pass
    finally:
        bar.close()
    res = acc.result()
    if res.n_frames != n:
        raise VideoMetricsError(f"compared {res.n_frames} frames instead of {n} (decoding stopped early)")
    res.alignment = notes
    res.original, res.generated = oi, gi
    if res.lpips_unavailable is None:
        res.lpips_unavailable = reason
    return res
