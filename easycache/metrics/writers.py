"""JSON, CSV and PNG plot outputs, each written whole or not at all."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from easycache.metrics.common import PROG, VideoMetricsError
from easycache.metrics.core import VideoMetrics
from easycache.metrics.folders import FolderMetrics
from easycache.metrics.report import fmt
from easycache.outputs import atomic_write, write_text


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _csv_num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _make_folder(path: Union[str, os.PathLike]) -> None:
    """Outputs may name a folder that does not exist yet."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)


CONVENTIONS = {
    "psnr_pooled": "-10*log10(MSE pooled over all pixels of all frames), data range 1 (official EasyCache convention)",
    "psnr_frame_mean": "mean of per-frame PSNR over frames with MSE > 0; identical frames (PSNR=+inf) are excluded and counted in n_identical_frames; +inf if all frames are identical",
    "ssim_mean": "mean of per-frame SSIM (torchmetrics, gaussian 11x11, sigma 1.5, data_range 1)",
    "lpips_mean": "mean of per-frame LPIPS (spatial map averaged, inputs in [-1, 1]); null when unavailable",
    "json_null": "a null PSNR means +inf (identical, MSE = 0); a null LPIPS means not computed",
    "folder_mean": "mean over pairs of the per-video values (each video weighs the same); +inf PSNRs are excluded and counted",
}


def _json_document(result: Union[VideoMetrics, FolderMetrics], settings: Dict[str, Any]) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"tool": PROG, "format_version": 1, "conventions": CONVENTIONS, "settings": settings}
    if isinstance(result, VideoMetrics):
        doc["mode"] = "pair"
        doc.update(result.to_dict())
    else:
        doc["mode"] = "folders"
        doc["original_dir"] = result.original_dir
        doc["generated_dir"] = result.generated_dir
        doc["lpips_unavailable"] = result.lpips_unavailable
        doc["mean"] = result.mean()
        doc["pairs"] = [dict(name=n, **m.to_dict()) for n, m in result.pairs]
        doc["failed"] = [{"name": n, "error": e} for n, e in result.failed]
        doc["unpaired"] = {"original": result.unpaired_original, "generated": result.unpaired_generated}
    return _json_safe(doc)


CSV_COLUMNS = ["kind", "video", "frame", "mse", "psnr", "psnr_frame_mean", "ssim", "lpips", "n_frames", "n_identical_frames"]


def _csv_rows(result: Union[VideoMetrics, FolderMetrics]) -> List[List[str]]:
    pairs = [(Path(result.generated.path).stem if result.generated else "video", result)] if isinstance(result, VideoMetrics) else result.pairs
    rows = []
    for name, m in pairs:
        lp = m.lpips_per_frame or [None] * m.n_frames
        for i in range(m.n_frames):
            rows.append(["frame", name, str(i), _csv_num(m.mse_per_frame[i]), _csv_num(m.psnr_per_frame[i]), "",
                         _csv_num(m.ssim_per_frame[i]), _csv_num(lp[i]), "", ""])
        rows.append(["video", name, "", _csv_num(m.mse_pooled), _csv_num(m.psnr_pooled), _csv_num(m.psnr_frame_mean),
                     _csv_num(m.ssim_mean), _csv_num(m.lpips_mean), str(m.n_frames), str(m.n_identical_frames)])
    if isinstance(result, FolderMetrics) and result.pairs:
        mean = result.mean()
        rows.append(["dataset_mean", f"mean of {mean['n_pairs']} pairs", "", "", _csv_num(mean["psnr_pooled"]),
                     _csv_num(mean["psnr_frame_mean"]), _csv_num(mean["ssim_mean"]), _csv_num(mean["lpips_mean"]),
                     str(mean["n_frames"]), str(mean["n_identical_frames"])])
    return rows


def write_json(path: Union[str, os.PathLike], result, settings: Optional[Dict[str, Any]] = None,
               overwrite: bool = True) -> None:
    doc = _json_document(result, settings or {})
    text = json.dumps(doc, indent=2, allow_nan=False)
    _make_folder(path)
    write_text(path, text + "\n", overwrite=overwrite)


def write_csv(path: Union[str, os.PathLike], result, overwrite: bool = True) -> None:
    def _w(tmp_path):
        with open(tmp_path, "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(CSV_COLUMNS)
            w.writerows(_csv_rows(result))

    _make_folder(path)
    atomic_write(path, _w, overwrite=overwrite)


def require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VideoMetricsError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None


def write_plot(path: Union[str, os.PathLike], result, overwrite: bool = True) -> None:
    """PNG with per-frame PSNR, SSIM and (when available) LPIPS curves."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    pairs = [("generated", result)] if isinstance(result, VideoMetrics) else result.pairs
    if not pairs:
        raise VideoMetricsError("nothing to plot (no pair was compared)")
    with_lpips = all(m.lpips_per_frame is not None for _, m in pairs)
    rows = 3 if with_lpips else 2
    fig, axes = plt.subplots(rows, 1, figsize=(9, 2.4 * rows + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    n_ident = 0
    for name, m in pairs:
        x = np.arange(m.n_frames)
        psnr = np.array([v if math.isfinite(v) else np.nan for v in m.psnr_per_frame])
        n_ident += m.n_identical_frames
        kw = dict(lw=1.2, label=name if len(pairs) > 1 else None, alpha=1.0 if len(pairs) == 1 else 0.7)
        axes[0].plot(x, psnr, **kw)
        axes[1].plot(x, m.ssim_per_frame, **kw)
        if with_lpips:
            axes[2].plot(x, m.lpips_per_frame, **kw)
    ylab = ["PSNR (dB)", "SSIM", "LPIPS" + (f" ({pairs[0][1].lpips_net})" if with_lpips else "")]
    for ax, lab in zip(axes, ylab):
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("frame")
    if len(pairs) == 1:
        m = pairs[0][1]
        title = f"PSNR pooled {fmt(m.psnr_pooled)} dB, per-frame mean {fmt(m.psnr_frame_mean)} dB, SSIM {m.ssim_mean:.4f}"
        if m.lpips_mean is not None:
            title += f", LPIPS {m.lpips_mean:.4f}"
    else:
        mean = result.mean()
        title = f"{mean['n_pairs']} pairs: mean PSNR pooled {fmt(mean['psnr_pooled'])} dB, SSIM {mean['ssim_mean']:.4f}"
        if len(pairs) <= 12:
            axes[0].legend(fontsize=7, ncol=2)
    if n_ident:
        title += f"\n{n_ident} identical frame(s) have PSNR=inf and are not drawn"
    if not with_lpips:
        title += "\nLPIPS unavailable"
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)

    def _w(tmp_path):
        with open(tmp_path, "wb") as fh:
            fh.write(buf.getvalue())

    _make_folder(path)
    atomic_write(path, _w, overwrite=overwrite)
