"""Folder mode: every video (or frame sub-folder) paired by name with its counterpart."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

from easycache.metrics.align import parse_align
from easycache.metrics.common import VideoMetricsError, natural_key, progress_bar, resolve_device
from easycache.metrics.compare import compare_videos
from easycache.metrics.core import VideoMetrics, finite_mean
from easycache.metrics.decode import VIDEO_EXTS, frame_files
from easycache.metrics.lpips import LpipsUnavailable, resolve_lpips


@dataclass
class FolderMetrics:
    """Metrics of every pair in two folders plus their means (each video weighs the same)."""

    original_dir: str
    generated_dir: str
    pairs: List[Tuple[str, VideoMetrics]]
    failed: List[Tuple[str, str]]  # (name, one-line error)
    unpaired_original: List[str]
    unpaired_generated: List[str]
    lpips_unavailable: Optional[str] = None

    def mean(self) -> Dict[str, Any]:
        ms = [m for _, m in self.pairs]
        if not ms:
            return {"n_pairs": 0}
        pooled, n_inf_pooled = finite_mean([m.psnr_pooled for m in ms])
        fmean, n_inf_fmean = finite_mean([m.psnr_frame_mean for m in ms])
        lp = [m.lpips_mean for m in ms]
        return {
            "n_pairs": len(ms),
            "n_frames": int(sum(m.n_frames for m in ms)),
            "psnr_pooled": pooled,
            "psnr_frame_mean": fmean,
            "n_identical_videos": n_inf_pooled,
            "n_identical_frames": int(sum(m.n_identical_frames for m in ms)),
            "ssim_mean": float(np.mean([m.ssim_mean for m in ms])),
            "lpips_mean": float(np.mean(lp)) if all(v is not None for v in lp) else None,
        }


def _folder_entries(folder: Path, role: str) -> Dict[str, Path]:
    entries: Dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: natural_key(q.name)):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if not frame_files(p):
                continue
            name = p.name
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            name = p.stem
        else:
            continue
        if name in entries:
            raise VideoMetricsError(f"{role} folder '{folder}' has two entries named {name!r}: {entries[name].name} and {p.name}")
        entries[name] = p
    return entries


def compare_folders(
    original_dir: Union[str, os.PathLike],
    generated_dir: Union[str, os.PathLike],
    *,
    device=None,
    lpips: Any = "auto",
    lpips_net: str = "alex",
    lpips_weights: Optional[Union[str, os.PathLike]] = None,
    lpips_download: bool = False,
    align: Union[None, str, Iterable[str]] = "none",
    ignore_fps: bool = False,
    chunk_frames: int = 16,
    progress: bool = True,
) -> FolderMetrics:
    """Compare every video (or frame sub-folder) of ``original_dir`` with the one of the same
    name (extension ignored) in ``generated_dir``. A failing pair is recorded in
    ``failed`` and the others are still computed; names found on one side only
    are listed in ``unpaired_*``.
    """
    od, gd = Path(original_dir), Path(generated_dir)
    for d, role in ((od, "original"), (gd, "generated")):
        if not d.is_dir():
            raise VideoMetricsError(f"{role} folder '{d}' does not exist or is not a folder")
    oe, ge = _folder_entries(od, "original"), _folder_entries(gd, "generated")
    if not oe:
        raise VideoMetricsError(f"original folder '{od}' contains no videos ({', '.join(VIDEO_EXTS)}) or frame folders")
    if not ge:
        raise VideoMetricsError(f"generated folder '{gd}' contains no videos ({', '.join(VIDEO_EXTS)}) or frame folders")
    names = [n for n in oe if n in ge]
    if not names:
        raise VideoMetricsError(f"no names in common between '{od}' and '{gd}' (files are paired by name without extension)")
    parse_align(align)
    dev = resolve_device(device)
    model, reason = resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    out = FolderMetrics(
        str(od), str(gd), [], [],
        [oe[n].name for n in oe if n not in ge],
        [ge[n].name for n in ge if n not in oe],
        reason,
    )
    bar = progress_bar(len(names), progress, "pairs", force=progress)
    try:
        for name in names:
            bar.set_postfix_str(name[:30], refresh=False)
            try:
                m = compare_videos(
                    oe[name], ge[name], device=dev, lpips=model if model is not None else False,
                    align=align, ignore_fps=ignore_fps, chunk_frames=chunk_frames, progress=False,
                )
                m.lpips_unavailable = m.lpips_unavailable or reason
                out.pairs.append((name, m))
            except LpipsUnavailable:
                raise
            except VideoMetricsError as exc:
                out.failed.append((name, str(exc)))
            bar.update(1)
    finally:
        bar.close()
    return out
