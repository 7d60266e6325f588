#!/usr/bin/env python3
"""Fidelity metrics (PSNR, SSIM, LPIPS) of a generated video against its original.

Typical use: compare the cache-accelerated video with the uncached baseline
generated from the same prompt and seed.

Command line (see ``--help`` for every flag)::

    python tools/video_metrics.py --original_video base.mp4 --generated_video fast.mp4
    python tools/video_metrics.py --original_video base_dir/ --generated_video fast_dir/ \\
        --json metrics.json --csv metrics.csv --plot metrics.png

Python API (all frames are ``[T, H, W, 3]`` RGB, either ``uint8`` in [0, 255]
or floating point in [0, 1]; numpy arrays or torch tensors, on any device)::

    from tools.video_metrics import compare_frames, compare_videos, compare_folders
    m = compare_frames(orig_frames, gen_frames, device="cuda")
    print(m.psnr_pooled, m.psnr_frame_mean, m.ssim_mean, m.lpips_mean)

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

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

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

PROG = "video_metrics"

VIDEO_EXTS = (".mp4", ".webm", ".gif", ".mkv", ".mov", ".avi", ".m4v")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

ALIGN_CHOICES = ("none", "trim", "resize")
FPS_REL_TOL = 0.01  # fps values differing by more than 1% are a mismatch

# torchvision ImageNet backbones used by LPIPS: file name, official URL, display name.
LPIPS_BACKBONES = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "AlexNet"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth", "VGG16"),
}
# Smallest frame side the LPIPS trunks accept (pooling layers need >= 1 pixel).
_LPIPS_MIN_SIDE = {"alex": 31, "vgg": 16}
# Frames per LPIPS forward pass (bounds activation memory at high resolution).
_LPIPS_SUBBATCH = {"alex": 8, "vgg": 2}
_SSIM_MIN_SIDE = 6  # torchmetrics reflect-pads by 5 pixels


class VideoMetricsError(Exception):
    """A user-facing problem (bad input, mismatch, ...). The message is one line."""


class LpipsUnavailable(VideoMetricsError):
    """LPIPS cannot be computed (backbone weights missing/unreadable, package missing)."""


# --------------------------------------------------------------------------- #
# Small helpers
# --------------------------------------------------------------------------- #


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for data range 1: ``-10*log10(mse)``; ``+inf`` when ``mse == 0``."""
    mse = float(mse)
    if mse < 0 or math.isnan(mse):
        raise ValueError(f"invalid MSE {mse!r}")
    return math.inf if mse == 0.0 else -10.0 * math.log10(mse)


def _finite_mean(values: Sequence[float]) -> Tuple[float, int]:
    """Mean of the finite values and the number of +inf values.

    Returns (+inf, n) when every value is +inf, (nan, 0) for an empty input.
    """
    finite = [v for v in values if math.isfinite(v)]
    n_inf = sum(1 for v in values if v == math.inf)
    if finite:
        return float(np.mean(np.asarray(finite, dtype=np.float64))), n_inf
    return (math.inf if n_inf else math.nan), n_inf


def _fmt_fps(fps: Optional[float]) -> str:
    return "unknown fps" if fps is None else f"{fps:g} fps"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _resolve_device(device: Optional[Union[str, "torch.device"]]):  # noqa: F821
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise VideoMetricsError(f"invalid --device {device!r}: {_one_line(exc)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VideoMetricsError(f"--device {device} requested but CUDA is not available (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VideoMetricsError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def _parse_align(align: Union[None, str, Iterable[str]]) -> Tuple[bool, bool]:
    """``'none'``, ``'trim'``, ``'resize'``, ``'trim,resize'`` or a list of those -> (trim, resize)."""
    if align is None:
        return False, False
    items = [align] if isinstance(align, str) else list(align)
    modes = set()
    for item in items:
        for part in str(item).replace("+", ",").split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part not in ALIGN_CHOICES:
                raise VideoMetricsError(f"unknown --align value {part!r} (choose from none, trim, resize, trim,resize)")
            modes.add(part)
    if "none" in modes and len(modes) > 1:
        raise VideoMetricsError("--align none cannot be combined with trim/resize")
    return "trim" in modes, "resize" in modes


# --------------------------------------------------------------------------- #
# Reading videos
# --------------------------------------------------------------------------- #


@dataclass
class VideoInfo:
    """What is known about one input before decoding it."""

    path: str
    kind: str  # "video" (ffmpeg), "gif", "frames" (folder of images) or "array" (in memory)
    n_frames: int
    height: int
    width: int
    fps: Optional[float]

    def describe(self) -> str:
        what = {"video": "video", "gif": "gif", "frames": "frame folder", "array": "in-memory"}[self.kind]
        return f"{self.n_frames} frames, {self.width}x{self.height}, {_fmt_fps(self.fps)}, {what}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "n_frames": self.n_frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }


def _frame_files(folder: Path) -> List[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_EXTS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _video_files(folder: Path) -> List[Path]:
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTS]


def _ffmpeg_reason(exc: BaseException) -> str:
    """Condense an imageio-ffmpeg error (which embeds ffmpeg's whole banner) to its key lines."""
    text = str(exc)
    if "=== stderr ===" in text:
        keep = []
        for line in text.split("=== stderr ===", 1)[1].splitlines():
            line = line.strip()
            if not line or line.startswith(("ffmpeg version", "built with", "configuration:", "lib", "Input #")):
                continue
            line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line)
            if line not in keep:
                keep.append(line)
        if keep:
            return "; ".join(keep[-2:])
        return text.split("=== stderr ===", 1)[0].strip() or type(exc).__name__
    return _one_line(text) or type(exc).__name__


def _to_rgb_uint8(img: np.ndarray, where: str) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float64) / 257.0).astype(np.uint8)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        raise VideoMetricsError(f"{where}: unsupported pixel type {img.dtype} (expected 8- or 16-bit images)")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]  # alpha is ignored
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise VideoMetricsError(f"{where}: unsupported image shape {tuple(img.shape)}")
    return np.ascontiguousarray(img)


def probe_video(path: Union[str, os.PathLike, VideoInfo], role: str = "video") -> VideoInfo:
    """Check that ``path`` is a readable video / GIF / folder of frames and return its metadata.

    ``role`` (e.g. ``"original video"``) prefixes error messages. Raises
    :class:`VideoMetricsError` with a one-line message naming the file.
    """
    if isinstance(path, VideoInfo):
        return path
    p = Path(path)
    label = f"{role} '{p}'"
    if not p.exists():
        raise VideoMetricsError(f"{label} does not exist")
    if p.is_dir():
        files = _frame_files(p)
        if not files:
            raise VideoMetricsError(f"{label} is a folder without image frames ({', '.join(FRAME_EXTS)})")
        w, h = _check_frame_headers(files, label)
        return VideoInfo(str(p), "frames", len(files), h, w, None)
    if not p.is_file():
        raise VideoMetricsError(f"{label} is not a regular file")
    if p.stat().st_size == 0:
        raise VideoMetricsError(f"{label} is empty (0 bytes)")
    ext = p.suffix.lower()
    if ext in FRAME_EXTS:
        raise VideoMetricsError(f"{label} is a single image; pass the folder that holds the frames")
    if ext == ".gif":
        return _probe_gif(p, label)
    return _probe_ffmpeg(p, label)


def _check_frame_headers(files: List[Path], label: str) -> Tuple[int, int]:
    """Open every frame's header (cheap, no decoding): unreadable files and sizes that
    differ from the first frame are reported before any computation. -> (width, height)."""
    from PIL import Image

    size = None
    for f in files:
        if f.stat().st_size == 0:
            raise VideoMetricsError(f"frame '{f}' of {label} is empty (0 bytes)")
        try:
            with Image.open(f) as im:
                fsize = im.size
        except Exception as exc:
            raise VideoMetricsError(f"frame '{f}' of {label} could not be read: {_one_line(exc)}") from None
        if size is None:
            size = fsize
        elif fsize != size:
            raise VideoMetricsError(
                f"frame '{f}' of {label} is {fsize[0]}x{fsize[1]}, the first frame is {size[0]}x{size[1]}"
            )
    return size


def _read_image(path: Path, label: str) -> np.ndarray:
    import imageio.v3 as iio

    if path.stat().st_size == 0:
        raise VideoMetricsError(f"frame '{path}' of {label} is empty (0 bytes)")
    try:
        img = iio.imread(path)
    except Exception as exc:  # imageio raises many types for unreadable images
        raise VideoMetricsError(f"frame '{path}' of {label} could not be read: {_one_line(exc)}") from None
    return _to_rgb_uint8(img, f"frame '{path}' of {label}")


def _probe_gif(p: Path, label: str) -> VideoInfo:
    import imageio.v3 as iio

    try:
        props = iio.improps(p, plugin="pillow")
        meta = iio.immeta(p, index=0, plugin="pillow")
    except Exception as exc:
        raise VideoMetricsError(f"{label} could not be read as a GIF (corrupt or truncated?): {_one_line(exc)}") from None
    shape = props.shape
    n = int(props.n_images or (shape[0] if props.is_batch else 1))
    h, w = (shape[1], shape[2]) if props.is_batch else (shape[0], shape[1])
    if n <= 0:
        raise VideoMetricsError(f"{label} contains no frames")
    duration_ms = meta.get("duration") or 0
    fps = 1000.0 / float(duration_ms) if duration_ms else None
    return VideoInfo(str(p), "gif", n, int(h), int(w), fps)


def _probe_ffmpeg(p: Path, label: str) -> VideoInfo:
    import imageio.v2 as iio2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = iio2.get_reader(str(p), format="FFMPEG")
            try:
                meta = reader.get_meta_data()
                n = int(reader.count_frames())
            finally:
                reader.close()
    except Exception as exc:
        raise VideoMetricsError(f"{label} could not be read as a video (corrupt or not a video?): {_ffmpeg_reason(exc)}") from None
    if n <= 0:
        raise VideoMetricsError(f"{label} contains no video frames")
    w, h = meta.get("size", (0, 0))
    if not w or not h:
        raise VideoMetricsError(f"{label} has no readable video stream")
    fps = meta.get("fps")
    fps = float(fps) if fps and math.isfinite(float(fps)) and float(fps) > 0 else None
    return VideoInfo(str(p), "video", n, int(h), int(w), fps)


def _iter_single_frames(info: VideoInfo, label: str) -> Iterator[np.ndarray]:
    p = Path(info.path)
    if info.kind == "frames":
        for f in _frame_files(p):
            yield _read_image(f, label)
        return
    if info.kind == "gif":
        import imageio.v3 as iio

        try:
            for frame in iio.imiter(p, plugin="pillow", mode="RGB"):
                yield _to_rgb_uint8(frame, label)
        except VideoMetricsError:
            raise
        except Exception as exc:
            raise VideoMetricsError(f"{label} failed while decoding (corrupt?): {_one_line(exc)}") from None
        return
    import imageio.v2 as iio2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = iio2.get_reader(str(p), format="FFMPEG")
    except Exception as exc:
        raise VideoMetricsError(f"{label} could not be read as a video: {_ffmpeg_reason(exc)}") from None
    try:
        it = iter(reader)
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    frame = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise VideoMetricsError(f"{label} failed while decoding (corrupt?): {_ffmpeg_reason(exc)}") from None
            yield _to_rgb_uint8(frame, label)
    finally:
        reader.close()


def iter_video(
    source: Union[str, os.PathLike, VideoInfo],
    chunk_frames: int = 16,
    max_frames: Optional[int] = None,
    role: str = "video",
) -> Iterator[np.ndarray]:
    """Yield ``uint8`` arrays ``[t, H, W, 3]`` of at most ``chunk_frames`` frames.

    Only one chunk is held in memory at a time. Stops after ``max_frames``
    frames. Raises :class:`VideoMetricsError` when the decoded frames disagree
    with the probed metadata (truncated file, frames of varying size).
    """
    if chunk_frames < 1:
        raise VideoMetricsError("chunk_frames must be >= 1")
    info = source if isinstance(source, VideoInfo) else probe_video(source, role)
    label = f"{role} '{info.path}'"
    want = info.n_frames if max_frames is None else min(max_frames, info.n_frames)
    buf: List[np.ndarray] = []
    n = 0
    if want > 0:
        frames = _iter_single_frames(info, label)
        try:
            for frame in frames:
                if frame.shape[:2] != (info.height, info.width):
                    raise VideoMetricsError(
                        f"{label}: frame {n} is {frame.shape[1]}x{frame.shape[0]}, "
                        f"expected {info.width}x{info.height} like the first frame"
                    )
                buf.append(frame)
                n += 1
                if len(buf) == chunk_frames:
                    yield np.stack(buf)
                    buf = []
                if n >= want:
                    break
            if max_frames is None or max_frames >= info.n_frames:
                if next(frames, None) is not None:
                    raise VideoMetricsError(
                        f"{label} decodes to more frames than the {info.n_frames} counted in its stream "
                        f"(variable frame rate or damaged file?)"
                    )
        finally:
            frames.close()  # stops the decoder process when we stop early
    if buf:
        yield np.stack(buf)
    if n < want:
        raise VideoMetricsError(f"{label} ended after {n} of {info.n_frames} frames (truncated or corrupt?)")


def read_video(path: Union[str, os.PathLike], role: str = "video") -> Tuple[np.ndarray, Optional[float]]:
    """Read a whole video / GIF / frame folder: ``(uint8 array [T, H, W, 3], fps or None)``."""
    info = probe_video(path, role)
    chunks = list(iter_video(info, chunk_frames=64, role=role))
    return np.concatenate(chunks, axis=0), info.fps


# --------------------------------------------------------------------------- #
# LPIPS with locally stored backbone weights
# --------------------------------------------------------------------------- #


def lpips_weights_path(net: str = "alex") -> Path:
    """Where the torchvision ImageNet backbone for ``net`` is looked up by default.

    ``<torch.hub.get_dir()>/checkpoints/<file>``, i.e. ``$TORCH_HOME/hub/checkpoints``
    with ``TORCH_HOME`` defaulting to ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``.
    """
    import torch.hub

    if net not in LPIPS_BACKBONES:
        raise VideoMetricsError(f"unknown LPIPS net {net!r} (choose alex or vgg)")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net][0]


def _missing_weights_hint(net: str, where: Path) -> str:
    fname, url, display = LPIPS_BACKBONES[net]
    return (
        f"LPIPS backbone weights not found at {where}; place torchvision's ImageNet {display} "
        f"file {fname} (from {url}) in {where.parent}/ (or set $TORCH_HOME, or pass --lpips_weights PATH)"
    )


_LPIPS_CACHE: Dict[Tuple, Any] = {}


def load_lpips(
    net: str = "alex",
    weights: Optional[Union[str, os.PathLike]] = None,
    device: Optional[Union[str, "torch.device"]] = "cpu",  # noqa: F821
    download: bool = False,
):
    """Build ``lpips.LPIPS(net, spatial=True)`` with the backbone loaded from a local file.

    ``weights``: the torchvision state dict (e.g. ``alexnet-owt-7be5be79.pth``)
    or a folder holding it; default :func:`lpips_weights_path`. Nothing is
    downloaded unless ``download=True``. The linear heads come from the
    ``lpips`` package. Every backbone tensor must be present in the file
    (strict load), so a randomly initialised trunk is never used silently.
    Raises :class:`LpipsUnavailable` with a one-line explanation.
    """
    import torch

    if net not in LPIPS_BACKBONES:
        raise VideoMetricsError(f"unknown LPIPS net {net!r} (choose alex or vgg)")
    fname, url, display = LPIPS_BACKBONES[net]
    if weights is None:
        path = lpips_weights_path(net)
    else:
        path = Path(weights).expanduser()
        if path.is_dir():
            path = path / fname
    dev = _resolve_device(device)

    if not path.is_file():
        if weights is not None and not download:
            if Path(weights).expanduser().is_dir():
                raise LpipsUnavailable(_missing_weights_hint(net, path))
            raise LpipsUnavailable(f"--lpips_weights file {path} does not exist (expected torchvision's ImageNet {display} weights {fname} from {url})")
        if not download:
            raise LpipsUnavailable(_missing_weights_hint(net, path))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=fname.rsplit("-", 1)[1].split(".")[0], progress=True)
        except Exception as exc:
            raise LpipsUnavailable(f"could not download {url} to {path}: {_one_line(exc)}; {_missing_weights_hint(net, path)}") from None

    stat = path.stat()
    key = (net, str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]

    try:
        import lpips as lpips_pkg
    except ImportError:
        raise LpipsUnavailable("the 'lpips' package is not installed (pip install lpips)") from None

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpipsUnavailable(f"could not read LPIPS backbone weights {path}: {_one_line(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"LPIPS backbone weights {path} is not a state dict")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's 'pretrained' deprecation warnings
        # pnet_rand=True: do not let torchvision download the trunk; it is loaded below.
        model = lpips_pkg.LPIPS(net=net, spatial=True, pretrained=True, pnet_rand=True, verbose=False)

    # Linear heads: LPIPS loads them from the package with strict=False; verify they all arrived.
    head_file = Path(lpips_pkg.__file__).resolve().parent / "weights" / f"v{model.version}" / f"{net}.pth"
    try:
        heads = torch.load(str(head_file), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpipsUnavailable(f"could not read the LPIPS linear heads {head_file}: {_one_line(exc)}") from None
    own = model.state_dict()
    lin_keys = {k for k in own if re.match(r"lin\d+\.", k)}
    if set(heads) != lin_keys or any(not torch.equal(own[k], heads[k].to(own[k].dtype)) for k in lin_keys):
        raise LpipsUnavailable(f"the LPIPS linear heads {head_file} do not match the {net} model of this lpips version")

    # Backbone: lpips wraps torchvision's `features` into slices that keep the layer
    # indices as module names ("slice2.3.weight" is "features.3.weight").
    mapped = {}
    missing = []
    for k, v in model.net.state_dict().items():
        _, idx_and_name = k.split(".", 1)
        src = None
        for cand in ("features." + idx_and_name, idx_and_name):
            if cand in state:
                src = cand
                break
        if src is None:
            missing.append("features." + idx_and_name)
            continue
        t = state[src]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise LpipsUnavailable(
                f"LPIPS backbone weights {path} do not fit the {display} trunk ({src}: {got} vs {tuple(v.shape)}); "
                f"is it the right file for --lpips_net {net}?"
            )
        mapped[k] = t
    if missing:
        raise LpipsUnavailable(
            f"LPIPS backbone weights {path} lack {len(missing)} of {len(model.net.state_dict())} {display} "
            f"'features' tensors (e.g. {missing[0]}); expected torchvision's {fname}"
        )
    model.net.load_state_dict(mapped, strict=True)
    model = model.eval().to(dev)
    for prm in model.parameters():
        prm.requires_grad_(False)
    model.weights_path = str(path)
    model.lpips_net = net
    _LPIPS_CACHE[key] = model
    return model


# --------------------------------------------------------------------------- #
# Metric computation
# --------------------------------------------------------------------------- #


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
        """JSON-ready dict (+inf is kept as float here; see :func:`_json_safe`)."""
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
        self.device = _resolve_device(device)
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

        o = _as_tensor(original).to(self.device, non_blocking=True)
        g = _as_tensor(generated).to(self.device, non_blocking=True)
        if self.resize_to is not None and tuple(g.shape[1:3]) != tuple(self.resize_to):
            g = _resize_frames(g, self.resize_to)
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
            of0, gf0 = _to_unit_float(o), _to_unit_float(g)
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
                need = _LPIPS_MIN_SIDE.get(self.lpips_net or "alex", 1)
                if min(h, w) < need:
                    self.lpips_skip_reason = (
                        f"frames of {w}x{h} are too small for the LPIPS {self.lpips_net} trunk (needs >= {need}x{need})"
                    )
                else:
                    step = _LPIPS_SUBBATCH.get(self.lpips_net or "alex", 4)
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
        frame_mean, n_inf = _finite_mean(psnr)
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


def _as_tensor(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def _to_unit_float(x):
    import torch

    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    return x.to(torch.float32)


def _resize_frames(x, size: Tuple[int, int]):
    import torch
    import torch.nn.functional as F

    y = _to_unit_float(x).permute(0, 3, 1, 2)
    y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y.clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous().to(torch.float32)


def _ssim_per_frame(gen_nchw, orig_nchw) -> List[float]:
    from torchmetrics.functional.image import structural_similarity_index_measure

    vals = structural_similarity_index_measure(gen_nchw, orig_nchw, data_range=1.0, reduction="none")
    return vals.reshape(-1).double().cpu().tolist()


def _resolve_lpips(lpips, net, weights, device, download, warn: bool = True) -> Tuple[Any, Optional[str]]:
    """-> (model or None, reason it is unavailable or None)."""
    if lpips is False or lpips is None:
        return None, None
    if lpips is True or lpips == "auto":
        try:
            return load_lpips(net, weights, device, download=download), None
        except LpipsUnavailable as exc:
            if lpips is True:
                raise
            if warn:
                warnings.warn(f"LPIPS unavailable: {exc}", RuntimeWarning, stacklevel=3)
            return None, str(exc)
    return lpips, None  # a prebuilt model


def _normalize_frames(x, layout: str, value_range: Tuple[float, float], clamp: bool, name: str):
    """Bring in-memory frames to THWC, uint8 or float32 in [0, 1] (same device)."""
    import torch

    t = _as_tensor(x)
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


def _plan_alignment(
    orig: VideoInfo, gen: VideoInfo, trim: bool, resize: bool, ignore_fps: bool
) -> Tuple[int, Optional[Tuple[int, int]], List[str]]:
    """Check a pair before decoding it -> (frames to compare, resize target or None, notes).

    Raises :class:`VideoMetricsError` listing every mismatch that the requested
    alignment does not cover. The notes say what was applied.
    """
    problems: List[str] = []
    applied: List[str] = []
    n = orig.n_frames
    if orig.n_frames != gen.n_frames:
        n = min(orig.n_frames, gen.n_frames)
        if trim:
            applied.append(f"trim: compared the first {n} frames (original has {orig.n_frames}, generated has {gen.n_frames})")
        else:
            problems.append(
                f"frame count mismatch: original has {orig.n_frames} frames, generated has {gen.n_frames} "
                f"(pass --align trim to compare the first {n})"
            )
    resize_to = None
    if (orig.height, orig.width) != (gen.height, gen.width):
        if resize:
            resize_to = (orig.height, orig.width)
            applied.append(
                f"resize: generated frames resized from {gen.width}x{gen.height} to {orig.width}x{orig.height} "
                f"(bilinear, antialiased)"
            )
        else:
            problems.append(
                f"resolution mismatch: original is {orig.width}x{orig.height}, generated is {gen.width}x{gen.height} "
                f"(pass --align resize to resize the generated frames)"
            )
    fps_known = orig.fps is not None and gen.fps is not None
    if fps_known and abs(orig.fps - gen.fps) > FPS_REL_TOL * max(orig.fps, gen.fps):
        if ignore_fps:
            applied.append(f"fps differ ({orig.fps:g} vs {gen.fps:g}), ignored: frames compared index by index")
        else:
            problems.append(
                f"fps mismatch: original is {orig.fps:g} fps, generated is {gen.fps:g} fps "
                f"(pass --ignore_fps to compare frame by frame anyway)"
            )
    if problems:
        raise VideoMetricsError(f"original '{orig.path}' vs generated '{gen.path}': " + "; ".join(problems))
    notes = applied
    if not applied:
        if fps_known:
            notes = ["none needed (frame count, size and fps match)"]
        elif orig.kind == "array" or gen.kind == "array":
            notes = ["none needed (frame count and size match)"]
        else:
            notes = ["none needed (frame count and size match; fps not checked: unknown for a frame folder)"]
    if trim and orig.n_frames == gen.n_frames:
        notes.append("trim requested, not needed")
    if resize and resize_to is None:
        notes.append("resize requested, not needed")
    return n, resize_to, notes


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
    orig = _normalize_frames(original, layout, value_range, clamp, "original")
    gen = _normalize_frames(generated, layout, value_range, clamp, "generated")
    trim, resize = _parse_align(align)
    oi = VideoInfo("<original frames>", "array", int(orig.shape[0]), int(orig.shape[1]), int(orig.shape[2]), None)
    gi = VideoInfo("<generated frames>", "array", int(gen.shape[0]), int(gen.shape[1]), int(gen.shape[2]), None)
    if oi.n_frames == 0 or gi.n_frames == 0:
        raise VideoMetricsError("no frames to compare (empty input)")
    n, resize_to, notes = _plan_alignment(oi, gi, trim, resize, ignore_fps=True)
    dev = _resolve_device(device)
    model, reason = _resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    acc = MetricsAccumulator(dev, model, resize_to)
    if chunk_frames < 1:
        raise VideoMetricsError("chunk_frames must be >= 1")
    bar = _progress_bar(n, progress, "frames")
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
    trim, resize = _parse_align(align)
    if chunk_frames < 1:
        raise VideoMetricsError("chunk_frames must be >= 1")
    oi = probe_video(original_path, "original video")
    gi = probe_video(generated_path, "generated video")
    n, resize_to, notes = _plan_alignment(oi, gi, trim, resize, ignore_fps)
    dev = _resolve_device(device)
    model, reason = _resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    acc = MetricsAccumulator(dev, model, resize_to)
    o_it = iter_video(oi, chunk_frames, max_frames=n, role="original video")
    g_it = iter_video(gi, chunk_frames, max_frames=n, role="generated video")
    bar = _progress_bar(n, progress, "frames")
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


# --------------------------------------------------------------------------- #
# Folder mode
# --------------------------------------------------------------------------- #


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
        pooled, n_inf_pooled = _finite_mean([m.psnr_pooled for m in ms])
        fmean, n_inf_fmean = _finite_mean([m.psnr_frame_mean for m in ms])
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
    for p in sorted(folder.iterdir(), key=lambda q: _natural_key(q.name)):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if not _frame_files(p):
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
    _parse_align(align)
    dev = _resolve_device(device)
    model, reason = _resolve_lpips(lpips, lpips_net, lpips_weights, dev, lpips_download)
    out = FolderMetrics(
        str(od), str(gd), [], [],
        [oe[n].name for n in oe if n not in ge],
        [ge[n].name for n in ge if n not in oe],
        reason,
    )
    bar = _progress_bar(len(names), progress, "pairs", force=progress)
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


def _progress_bar(total: int, enabled: Optional[bool], unit: str, force: bool = False):
    from tqdm import tqdm

    if enabled is False:
        disable = True
    elif force:
        disable = False
    else:
        disable = None if enabled is None else not enabled  # None: only on a terminal
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------- #
# Output: table, JSON, CSV, plot
# --------------------------------------------------------------------------- #


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


def _atomic_write(path: Path, write_fn, binary: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as fh:
            write_fn(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


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


def write_json(path: Union[str, os.PathLike], result, settings: Optional[Dict[str, Any]] = None) -> None:
    doc = _json_document(result, settings or {})
    text = json.dumps(doc, indent=2, allow_nan=False)
    _atomic_write(Path(path), lambda fh: fh.write(text + "\n"))


def write_csv(path: Union[str, os.PathLike], result) -> None:
    def _w(fh):
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        w.writerows(_csv_rows(result))

    _atomic_write(Path(path), _w)


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VideoMetricsError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None


def write_plot(path: Union[str, os.PathLike], result) -> None:
    """PNG with per-frame PSNR, SSIM and (when available) LPIPS curves."""
    _require_matplotlib()
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
        title = f"PSNR pooled {_fmt(m.psnr_pooled)} dB, per-frame mean {_fmt(m.psnr_frame_mean)} dB, SSIM {m.ssim_mean:.4f}"
        if m.lpips_mean is not None:
            title += f", LPIPS {m.lpips_mean:.4f}"
    else:
        mean = result.mean()
        title = f"{mean['n_pairs']} pairs: mean PSNR pooled {_fmt(mean['psnr_pooled'])} dB, SSIM {mean['ssim_mean']:.4f}"
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
    _atomic_write(Path(path), lambda fh: fh.write(buf.getvalue()), binary=True)


def _fmt(v: Optional[float], nd: int = 4) -> str:
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
    lp = _fmt(m.lpips_mean) if m.lpips_mean is not None else ("disabled" if lpips_label is None else "unavailable")
    rows = [
        ("PSNR  [dB] from MSE pooled over the video (official)", _fmt(m.psnr_pooled),
         "  (all frames identical)" if math.isinf(m.psnr_pooled) else ""),
        ("PSNR  [dB] mean of per-frame PSNR", _fmt(m.psnr_frame_mean), _identical_note(m.n_identical_frames, m.n_frames)),
        ("SSIM  mean of per-frame SSIM", _fmt(m.ssim_mean), ""),
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
                f"{i:>5}  {m.mse_per_frame[i]:>12.6e}  {_fmt(m.psnr_per_frame[i], 3):>8}  "
                f"{_fmt(m.ssim_per_frame[i]):>7}  {_fmt(lpf[i]):>7}"
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
        return _fmt(v) if v is not None else ("disabled" if lpips_label is None else "unavailable")

    header = ["name", "frames", "PSNR pooled", "PSNR frame-mean", "SSIM", f"LPIPS ({lpips_label or 'off'})", "notes"]
    table = []
    for name, m in r.pairs:
        note = []
        if m.n_identical_frames:
            note.append(f"{m.n_identical_frames} identical frames")
        if any(a.startswith(("trim:", "resize:", "fps differ")) for a in m.alignment):
            note.append("aligned")
        table.append([name, str(m.n_frames), _fmt(m.psnr_pooled), _fmt(m.psnr_frame_mean), _fmt(m.ssim_mean),
                      lp_cell(m.lpips_mean), ", ".join(note)])
    for name, err in r.failed:
        table.append([name, "-", "-", "-", "-", "-", "FAILED (see error)"])
    mean = r.mean()
    if r.pairs:
        note = f"{mean['n_identical_videos']} identical videos excluded from PSNR means" if mean["n_identical_videos"] else ""
        table.append([f"MEAN ({mean['n_pairs']} pairs)", str(mean["n_frames"]), _fmt(mean["psnr_pooled"]),
                      _fmt(mean["psnr_frame_mean"]), _fmt(mean["ssim_mean"]),
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


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="video_metrics.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "PSNR / SSIM / LPIPS of a generated (e.g. cache-accelerated) video against the original.\n"
            "Inputs: video files (mp4, webm, gif, mkv, mov, avi), folders of frames (png, jpg, ...),\n"
            "or two folders of videos paired by file name without extension (folder mode)."
        ),
        epilog=(
            "PSNR is reported two ways: pooled (from the MSE over the whole video, as the official\n"
            "EasyCache tool) and the mean of per-frame PSNR (identical frames have PSNR=inf; they are\n"
            "excluded from that mean and counted). SSIM and LPIPS are means of per-frame values.\n"
            "Frame count, resolution and fps must match unless --align / --ignore_fps say otherwise.\n\n"
            "LPIPS needs torchvision's ImageNet backbone (alexnet-owt-7be5be79.pth or vgg16-397923af.pth)\n"
            "in $TORCH_HOME/hub/checkpoints (default ~/.cache/torch/hub/checkpoints) or --lpips_weights;\n"
            "nothing is downloaded unless --lpips_download. Without it LPIPS is reported unavailable.\n\n"
            "--json: full results incl. per-frame values; +inf PSNR is written as null (MSE = 0).\n"
            "--csv: columns " + ",".join(CSV_COLUMNS) + ";\n"
            "  kind=frame rows are per-frame, kind=video rows per video (mse/psnr pooled),\n"
            "  kind=dataset_mean the folder-mode mean; +inf is written as 'inf'.\n"
            "Exit status: 0 ok, 2 bad input / mismatch / failed pair."
        ),
    )
    p.add_argument("--original_video", "--original", dest="original", required=True, metavar="PATH",
                   help="original (baseline) video, frame folder, or folder of videos")
    p.add_argument("--generated_video", "--generated", dest="generated", required=True, metavar="PATH",
                   help="generated (accelerated) video, frame folder, or folder of videos")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--lpips_net", choices=sorted(LPIPS_BACKBONES), default="alex", help="LPIPS trunk (default: alex, as the official tool)")
    p.add_argument("--lpips_weights", metavar="PATH", default=None,
                   help="torchvision backbone state dict file (or folder holding it); default: $TORCH_HOME/hub/checkpoints/<file>")
    p.add_argument("--lpips_download", action="store_true", help="download the backbone weights if they are missing (off by default)")
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--align", action="append", metavar="MODE", default=None,
                   help="none (default): mismatches are errors; trim: compare the first N frames, N = shorter video; "
                        "resize: resize generated frames to the original's size (bilinear, antialiased); "
                        "combine as 'trim,resize' or repeat the flag. What was applied is printed.")
    p.add_argument("--ignore_fps", action="store_true", help="do not fail when the fps differ (frames are compared index by index)")
    p.add_argument("--chunk_frames", type=int, default=16, metavar="N",
                   help="frames decoded and moved to the device at a time (default: 16)")
    p.add_argument("--json", metavar="PATH", help="write all results (incl. per-frame values) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write per-frame and per-video rows as CSV")
    p.add_argument("--plot", metavar="PATH", help="write a PNG plot of per-frame PSNR/SSIM/LPIPS (needs matplotlib)")
    p.add_argument("--per_frame", action="store_true", help="also print the per-frame table")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _check_output_path(path: Optional[str], flag: str) -> None:
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise VideoMetricsError(f"{flag} {path} is a folder, expected a file path")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise VideoMetricsError(f"{flag} {path}: folder {parent} is not writable")


def _err(msg: str) -> None:
    print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr, flush=True)


def _input_kind(p: Path) -> str:
    """'file', 'frames' (folder of images), 'videos' (folder of videos / frame folders) or 'empty'."""
    if not p.is_dir():
        return "file"
    if _video_files(p):
        return "videos"
    if _frame_files(p):
        return "frames"
    if any(d.is_dir() and not d.name.startswith(".") and _frame_files(d) for d in p.iterdir()):
        return "videos"
    return "empty"


def _run(args) -> int:
    if args.chunk_frames < 1:
        raise VideoMetricsError("--chunk_frames must be >= 1")
    align = args.align or ["none"]
    trim, resize = _parse_align(align)
    for flag in ("json", "csv", "plot"):
        _check_output_path(getattr(args, flag), "--" + flag)
    if args.plot:
        _require_matplotlib()
    a, b = Path(args.original), Path(args.generated)
    for path, role in ((a, "original video"), (b, "generated video")):
        if not path.exists():
            raise VideoMetricsError(f"{role} '{path}' does not exist")
    ka, kb = _input_kind(a), _input_kind(b)
    folder_mode = ka == "videos" and kb == "videos"
    if not folder_mode and "videos" in (ka, kb):
        what = {"file": "a single video", "frames": "a frame folder", "videos": "a folder of videos",
                "empty": "an empty folder"}
        raise VideoMetricsError(
            f"cannot compare '{a}' ({what[ka]}) with '{b}' ({what[kb]}): "
            f"pass two folders of videos, or two videos / frame folders"
        )
    # Check the inputs before LPIPS is loaded: bad input gives exactly one error line.
    infos = None
    if not folder_mode:
        oi = probe_video(a, "original video")
        gi = probe_video(b, "generated video")
        _plan_alignment(oi, gi, trim, resize, args.ignore_fps)
        infos = (oi, gi)
    device = _resolve_device(args.device)

    if args.no_lpips:
        model, lpips_status = None, "disabled (--no_lpips)"
    else:
        model, lpips_status = _resolve_lpips("auto", args.lpips_net, args.lpips_weights, device,
                                             args.lpips_download, warn=False)
        if lpips_status:
            print(f"{PROG}: warning: LPIPS unavailable: {_one_line(lpips_status)}", file=sys.stderr, flush=True)
    common = dict(device=device, lpips=model if model is not None else False, align=align,
                  ignore_fps=args.ignore_fps, chunk_frames=args.chunk_frames)
    settings = {
        "device": str(device), "chunk_frames": args.chunk_frames, "align": align, "ignore_fps": args.ignore_fps,
        "lpips_net": None if args.no_lpips else args.lpips_net,
        "lpips_weights": getattr(model, "weights_path", None),
    }

    result: Union[VideoMetrics, FolderMetrics]
    if folder_mode:
        result = compare_folders(a, b, progress=not args.no_progress, **common)
        result.lpips_unavailable = lpips_status
        for _, m in result.pairs:
            if m.lpips_mean is None and m.lpips_unavailable is None:
                m.lpips_unavailable = lpips_status
        print(format_folders(result, None if args.no_lpips else args.lpips_net))
    else:
        result = compare_videos(infos[0], infos[1], progress=False if args.no_progress else None, **common)
        if result.lpips_mean is None and result.lpips_unavailable is None:
            result.lpips_unavailable = lpips_status
        elif result.lpips_mean is None and model is not None:  # e.g. frames too small for the trunk
            print(f"{PROG}: warning: LPIPS unavailable: {_one_line(result.lpips_unavailable)}", file=sys.stderr)
        print(format_pair(result, None if args.no_lpips else args.lpips_net, per_frame=args.per_frame))
    if model is not None:
        print(f"LPIPS backbone: {model.weights_path}")
    elif args.no_lpips:
        print("LPIPS: disabled (--no_lpips)")
    else:
        print("LPIPS: unavailable (reason on stderr and in --json output)")
    sys.stdout.flush()

    written = []
    if args.json:
        write_json(args.json, result, settings)
        written.append(args.json)
    if args.csv:
        write_csv(args.csv, result)
        written.append(args.csv)
    if args.plot:
        write_plot(args.plot, result)
        written.append(args.plot)
    if written:
        print("wrote: " + ", ".join(written))

    if isinstance(result, FolderMetrics) and result.failed:
        for name, err in result.failed:
            _err(f"pair {name!r}: {err}")
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except VideoMetricsError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # out-of-memory is a user-fixable condition too
        if type(exc).__name__ == "OutOfMemoryError":
            _err(f"out of memory on the device; lower --chunk_frames (now {args.chunk_frames}) or use --device cpu")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
