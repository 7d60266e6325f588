"""The text tables printed for one pair and for folder mode."""

from __future__ import annotations

import math
from typing import Optional

from easycache.metrics.core import VideoMetrics
from easycache.metrics.folders import FolderMetrics


def fmt(v: Optional[float], nd: int = 4) -> str:
    if v is None:
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if math.isnan(v):
        return "nan"
    return f"{v:.{nd}f}"


def _identical_note(n_ident: int, n: int) -> str:
    if n_ident == 0:
        return ""
    if n_ident == n:
        return f"  (all {n} frames identical)"
    return f"  (over {n - n_ident} frames; {n_ident} identical frame(s) with PSNR=inf excluded)"


def format_pair(m: VideoMetrics, lpips_label: Optional[str], per_frame: bool = False) -> str:
    """Human-readable report of one pair (``lpips_label=None``: LPIPS disabled)."""
    lines = []
    if m.original is not None and m.generated is not None:
        lines.append(f"original : {m.original.path}  ({m.original.describe()})")
        lines.append(f"generated: {m.generated.path}  ({m.generated.describe()})")
    lines.append("alignment: " + "; ".join(m.alignment))
    lines.append(f"frames compared: {m.n_frames}")
    lines.append("")
    lp = fmt(m.lpips_mean) if m.lpips_mean is not None else ("disabled" if lpips_label is None else "unavailable")
    rows = [
        ("PSNR  [dB] from MSE pooled over the video (official)", fmt(m.psnr_pooled),
         "  (all frames identical)" if math.isinf(m.psnr_pooled) else ""),
        ("PSNR  [dB] mean of per-frame PSNR", fmt(m.psnr_frame_mean), _identical_note(m.n_identical_frames, m.n_frames)),
        ("SSIM  mean of per-frame SSIM", fmt(m.ssim_mean), ""),
        (f"LPIPS mean of per-frame LPIPS ({lpips_label or 'off'})", lp, ""),
    ]
    width = max(len(r[0]) for r in rows)
    for label, val, note in rows:
        lines.append(f"{label.ljust(width)} : {val:>8}{note}")
    if per_frame:
        lines.append("")
        lines.append(f"{'frame':>5}  {'MSE':>12}  {'PSNR':>8}  {'SSIM':>7}  {'LPIPS':>7}")
        lpf = m.lpips_per_frame or [None] * m.n_frames
        for i in range(m.n_frames):
            lines.append(
                f"{i:>5}  {m.mse_per_frame[i]:>12.6e}  {fmt(m.psnr_per_frame[i], 3):>8}  "
                f"{fmt(m.ssim_per_frame[i]):>7}  {fmt(lpf[i]):>7}"
            )
    return "\n".join(lines)


def format_folders(r: FolderMetrics, lpips_label: Optional[str]) -> str:
    """Human-readable table: one row per pair, then the mean over pairs."""
    lines = [f"original : {r.original_dir}", f"generated: {r.generated_dir}"]
    notes = sorted({n for _, m in r.pairs for n in m.alignment})
    if notes:
        lines.append("alignment: " + "; ".join(notes) if len(notes) == 1 else "alignment:")
        if len(notes) > 1:
            lines.extend(f"  - {n}" for n in notes)
    lines.append("")
    def lp_cell(v):
        return fmt(v) if v is not None else ("disabled" if lpips_label is None else "unavailable")

    header = ["name", "frames", "PSNR pooled", "PSNR frame-mean", "SSIM", f"LPIPS ({lpips_label or 'off'})", "notes"]
    table = []
    for name, m in r.pairs:
        note = []
        if m.n_identical_frames:
            note.append(f"{m.n_identical_frames} identical frames")
        if any(a.startswith(("trim:", "resize:", "fps differ")) for a in m.alignment):
            note.append("aligned")
        table.append([name, str(m.n_frames), fmt(m.psnr_pooled), fmt(m.psnr_frame_mean), fmt(m.ssim_mean),
                      lp_cell(m.lpips_mean), ", ".join(note)])
    for name, err in r.failed:
        table.append([name, "-", "-", "-", "-", "-", "FAILED (see error)"])
    mean = r.mean()
    if r.pairs:
        note = f"{mean['n_identical_videos']} identical videos excluded from PSNR means" if mean["n_identical_videos"] else ""
        table.append([f"MEAN ({mean['n_pairs']} pairs)", str(mean["n_frames"]), fmt(mean["psnr_pooled"]),
                      fmt(mean["psnr_frame_mean"]), fmt(mean["ssim_mean"]),
                      lp_cell(mean["lpips_mean"]), note])
    widths = [max(len(header[i]), *(len(row[i]) for row in table)) for i in range(len(header))]

    def fmt_row(row):
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in range(1, len(row) - 1)]
        return "  ".join(cells + [row[-1]]).rstrip()

    lines.append(fmt_row(header))
    for i, row in enumerate(table):
        if r.pairs and i == len(table) - 1:
            lines.append("-" * (sum(widths[:-1]) + 2 * (len(widths) - 2)))
        lines.append(fmt_row(row))
    lines.append("")
    lines.append("PSNR pooled = from the MSE pooled over each video (official); PSNR frame-mean = mean of per-frame PSNR")
    lines.append("(identical frames, PSNR=inf, excluded and counted); MEAN = mean over pairs, each video weighing the same.")
    if r.unpaired_original:
        lines.append(f"not compared, only in original folder ({len(r.unpaired_original)}): {', '.join(r.unpaired_original)}")
    if r.unpaired_generated:
        lines.append(f"not compared, only in generated folder ({len(r.unpaired_generated)}): {', '.join(r.unpaired_generated)}")
    return "\n".join(lines)
