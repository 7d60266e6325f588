"""Per-frame PSNR, SSIM and LPIPS, accumulated chunk by chunk into a VideoMetrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from easycache.metrics.align import resize_frames
from easycache.metrics.common import VideoMetricsError, resolve_device
from easycache.metrics.decode import VideoInfo
from easycache.metrics.frames import as_tensor, to_unit_float
from easycache.metrics.lpips import LPIPS_MIN_SIDE, LPIPS_SUBBATCH

_SSIM_MIN_SIDE = 6  # torchmetrics reflect-pads by 5 pixels


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for data range 1: ``-10*log10(mse)``; ``+inf`` when ``mse == 0``."""
    mse = float(mse)
    if mse < 0 or math.isnan(mse):
        raise ValueError(f"invalid MSE {mse!r}")
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def finite_mean(values: Sequence[float]) -> Tuple[float, int]:
    """Mean of the finite values and the number of +inf values.

    Returns (+inf, n) when every value is +inf, (nan, 0) for an empty input.
    """
    finite = [v for v in values if math.isfinite(v)]
    n_inf = sum(1 for v in values if v == math.inf)
    if finite:
        return float(np.mean(np.asarray(finite, dtype=np.float64))), n_inf
    return (math.inf if n_inf else math.nan), n_inf


@dataclass
class VideoMetrics:
    """Metrics of one (original, generated) pair. Per-frame lists are indexed by frame."""

    n_frames: int
    mse_per_frame: List[float]
    psnr_per_frame: List[float]  # +inf for identical frames
    ssim_per_frame: List[float]
    lpips_per_frame: Optional[List[float]]  # None when LPIPS was not computed
    mse_pooled: float
    psnr_pooled: float  # from mse_pooled; +inf when the videos are identical
    psnr_frame_mean: float  # mean over finite per-frame PSNRs; +inf if all frames identical
    n_identical_frames: int  # frames with MSE == 0 (excluded from psnr_frame_mean)
    ssim_mean: float
    lpips_mean: Optional[float]
    lpips_net: Optional[str] = None
    lpips_weights: Optional[str] = None
    lpips_unavailable: Optional[str] = None  # reason, when LPIPS was wanted but not computed
    alignment: List[str] = field(default_factory=list)  # human-readable notes
    original: Optional[VideoInfo] = None
    generated: Optional[VideoInfo] = None

    def summary(self) -> Dict[str, Any]:
        return {
            "n_frames": self.n_frames,
            "mse_pooled": self.mse_pooled,
            "psnr_pooled": self.psnr_pooled,
            "psnr_frame_mean": self.psnr_frame_mean,
            "n_identical_frames": self.n_identical_frames,
            "ssim_mean": self.ssim_mean,
            "lpips_mean": self.lpips_mean,
        }

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (+inf is kept as float here; ``writers`` writes it as null)."""
        return {
            "original": self.original.to_dict() if self.original else None,
            "generated": self.generated.to_dict() if self.generated else None,
            "alignment": list(self.alignment),
            "lpips": {
                "net": self.lpips_net,
                "weights": self.lpips_weights,
                "unavailable": self.lpips_unavailable,
            },
            "summary": self.summary(),
            "per_frame": {
                "index": list(range(self.n_frames)),
                "mse": list(self.mse_per_frame),
                "psnr": list(self.psnr_per_frame),
                "ssim": list(self.ssim_per_frame),
                "lpips": list(self.lpips_per_frame) if self.lpips_per_frame is not None else None,
            },
        }


class MetricsAccumulator:
    """Streaming computation: feed matching chunks with :meth:`update`, then :meth:`result`.

    Chunks are ``[t, H, W, 3]`` (uint8 in [0, 255] or float in [0, 1]); only the
    current chunk is moved to ``device``. ``lpips_model`` is a model from
    :func:`load_lpips` or ``None``. ``resize_to=(H, W)`` resizes generated frames
    (bilinear, antialiased) to the original's size.
    """

    def __init__(self, device="cpu", lpips_model=None, resize_to: Optional[Tuple[int, int]] = None):
        self.device = resolve_device(device)
        if lpips_model is not None:
            prm = next(lpips_model.parameters(), None)
            if prm is not None and (
                prm.device.type != self.device.type
                or (self.device.index is not None and prm.device.index != self.device.index)
            ):
                raise VideoMetricsError(f"the LPIPS model is on {prm.device} but metrics run on {self.device}")
        self.lpips_model = lpips_model
        self.lpips_net = getattr(lpips_model, "lpips_net", None) if lpips_model is not None else None
        self.lpips_skip_reason: Optional[str] = None
        self.resize_to = resize_to
        self._sse_int = 0  # exact sum of squared uint8 differences
        self._sse_float = 0.0  # sum of squared differences in [0, 1] units (float inputs)
        self._n_values = 0
        self.mse: List[float] = []
        self.ssim: List[float] = []
        self.lpips: List[float] = []

    def update(self, original, generated) -> None:
        import torch

        o = as_tensor(original).to(self.device, non_blocking=True)
        g = as_tensor(generated).to(self.device, non_blocking=True)
        if self.resize_to is not None and tuple(g.shape[1:3]) != tuple(self.resize_to):
            g = resize_frames(g, self.resize_to)
        if o.shape != g.shape:
            raise VideoMetricsError(f"chunk shapes differ: original {tuple(o.shape)} vs generated {tuple(g.shape)}")
        t, h, w, _ = o.shape
        if min(h, w) < _SSIM_MIN_SIDE:
            raise VideoMetricsError(f"frames of {w}x{h} are too small (SSIM needs at least {_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE})")
        per_frame_values = h * w * 3
        with torch.inference_mode():
            if o.dtype == torch.uint8 and g.dtype == torch.uint8:
                d = g.to(torch.int32) - o.to(torch.int32)
                sse = (d * d).sum(dim=(1, 2, 3), dtype=torch.int64).cpu().tolist()
                self._sse_int += int(sum(sse))
                self.mse.extend(s / (65025.0 * per_frame_values) for s in sse)
                del d
            of0, gf0 = to_unit_float(o), to_unit_float(g)
            if not (o.dtype == torch.uint8 and g.dtype == torch.uint8):
                d = gf0 - of0
                sse = (d * d).sum(dim=(1, 2, 3), dtype=torch.float64).cpu().tolist()
                self._sse_float += float(sum(sse))
                self.mse.extend(s / per_frame_values for s in sse)
                del d
            self._n_values += t * per_frame_values
            of = of0.permute(0, 3, 1, 2).contiguous()
            gf = gf0.permute(0, 3, 1, 2).contiguous()
            del of0, gf0
            self.ssim.extend(_ssim_per_frame(gf, of))
            if self.lpips_model is not None and self.lpips_skip_reason is None:
                need = LPIPS_MIN_SIDE.get(self.lpips_net or "alex", 1)
                if min(h, w) < need:
                    self.lpips_skip_reason = (
                        f"frames of {w}x{h} are too small for the LPIPS {self.lpips_net} trunk (needs >= {need}x{need})"
                    )
                else:
                    step = LPIPS_SUBBATCH.get(self.lpips_net or "alex", 4)
                    for i in range(0, t, step):
                        dmap = self.lpips_model(gf[i : i + step] * 2 - 1, of[i : i + step] * 2 - 1)
                        self.lpips.extend(dmap.mean(dim=(1, 2, 3)).double().cpu().tolist())

    def result(self) -> VideoMetrics:
        n = len(self.mse)
        if n == 0:
            raise VideoMetricsError("no frames were compared")
        if self._sse_float == 0.0:
            pooled = self._sse_int / (65025 * self._n_values)  # exact integers, one rounding
        else:
            pooled = (self._sse_int / 65025.0 + self._sse_float) / self._n_values
        psnr = [psnr_from_mse(m) for m in self.mse]
        frame_mean, n_inf = finite_mean(psnr)
        have_lpips = self.lpips_model is not None and self.lpips_skip_reason is None and len(self.lpips) == n
        return VideoMetrics(
            n_frames=n,
            mse_per_frame=list(self.mse),
            psnr_per_frame=psnr,
            ssim_per_frame=list(self.ssim),
            lpips_per_frame=list(self.lpips) if have_lpips else None,
            mse_pooled=pooled,
            psnr_pooled=psnr_from_mse(pooled),
            psnr_frame_mean=frame_mean,
            n_identical_frames=n_inf,
            ssim_mean=float(np.mean(self.ssim)),
            lpips_mean=float(np.mean(self.lpips)) if have_lpips else None,
            lpips_net=self.lpips_net if have_lpips else None,
            lpips_weights=getattr(self.lpips_model, "weights_path", None) if have_lpips else None,
            lpips_unavailable=self.lpips_skip_reason,
        )


def _ssim_per_frame(gen_nchw, orig_nchw) -> List[float]:
    from torchmetrics.functional.image import structural_similarity_index_measure

    vals = structural_similarity_index_measure(gen_nchw, orig_nchw, data_range=1.0, reduction="none")
    return vals.reshape(-1).double().cpu().tolist()
