"""Fidelity metrics (PSNR, SSIM, LPIPS) of a generated video against its original.

The command line is ``tools/video_metrics.py``; this package is its implementation and
Python API (all frames are ``[T, H, W, 3]`` RGB, either ``uint8`` in [0, 255] or floating
point in [0, 1]; numpy arrays or torch tensors, on any device)::

    from easycache.metrics import compare_frames, compare_videos, compare_folders
    m = compare_frames(orig_frames, gen_frames, device="cuda")
    print(m.psnr_pooled, m.psnr_frame_mean, m.ssim_mean, m.lpips_mean)

Modules: ``decode`` (probing and streaming frames), ``lpips`` (offline LPIPS), ``frames``
(in-memory frame tensors), ``align`` (trim / resize / fps checks), ``core`` (per-frame
metrics and their accumulation), ``compare`` (pairs), ``folders`` (folder mode),
``report`` (text tables), ``writers`` (JSON / CSV / plot), ``cli`` (the command line).

Importing the package loads numpy only; torch, imageio, lpips, torchmetrics and matplotlib
are imported when they are needed.

Conventions
-----------
* All metrics use data range 1 (pixels scaled to [0, 1]).
* ``psnr_pooled``: ``-10*log10(MSE)`` with the MSE pooled over every pixel of
  every frame (the official EasyCache convention). Computed exactly from the
  accumulated sum of squared errors, never from per-frame PSNRs.
* ``psnr_frame_mean``: mean of per-frame PSNRs (the convention of many other
  projects). Frames identical in both videos have PSNR = +inf; they are
  excluded from this mean and counted in ``n_identical_frames``. If every frame
  is identical the mean is +inf.
* ``ssim_mean``: mean of per-frame SSIM (torchmetrics, Gaussian window 11,
  sigma 1.5, data_range 1.0), as the official tool.
* ``lpips_mean``: mean of per-frame LPIPS (``lpips.LPIPS(spatial=True)``, map
  averaged, inputs scaled to [-1, 1]), as the official tool. The ImageNet
  backbone is loaded from a local file only (``$TORCH_HOME/hub/checkpoints`` or
  ``--lpips_weights``); when it is missing LPIPS is reported as unavailable.
* JSON output: +inf PSNR (identical frames / videos) is written as ``null``
  (its MSE, always present, is then 0); unavailable LPIPS is ``null`` too.
  CSV output writes +inf as ``inf`` and unavailable values as an empty cell.
"""

# Besides __all__, the constants and build_parser of the former single-file tool are
# importable from here too.
from easycache.metrics.align import ALIGN_CHOICES, FPS_REL_TOL  # noqa: F401
from easycache.metrics.cli import build_parser, main  # noqa: F401
from easycache.metrics.common import PROG, VideoMetricsError  # noqa: F401
from easycache.metrics.compare import compare_frames, compare_videos
from easycache.metrics.core import MetricsAccumulator, VideoMetrics, psnr_from_mse
from easycache.metrics.decode import FRAME_EXTS, VIDEO_EXTS, VideoInfo, iter_video, probe_video, read_video  # noqa: F401
from easycache.metrics.folders import FolderMetrics, compare_folders
from easycache.metrics.lpips import LPIPS_BACKBONES, LpipsUnavailable, load_lpips, lpips_weights_path  # noqa: F401
from easycache.metrics.report import format_folders, format_pair
from easycache.metrics.writers import CONVENTIONS, CSV_COLUMNS, write_csv, write_json, write_plot  # noqa: F401

__all__ = [
    "VideoMetricsError",
    "LpipsUnavailable",
    "VideoInfo",
    "VideoMetrics",
    "FolderMetrics",
    "MetricsAccumulator",
    "probe_video",
    "iter_video",
    "read_video",
    "compare_frames",
    "compare_videos",
    "compare_folders",
    "load_lpips",
    "lpips_weights_path",
    "psnr_from_mse",
    "write_json",
    "write_csv",
    "write_plot",
    "format_pair",
    "format_folders",
    "main",
]
