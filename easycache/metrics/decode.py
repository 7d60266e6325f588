"""Probing and streaming frames from video files (ffmpeg), GIFs and folders of frames."""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from easycache.metrics.common import VideoMetricsError, fmt_fps, natural_key, one_line

VIDEO_EXTS = (".mp4", ".webm", ".gif", ".mkv", ".mov", ".avi", ".m4v")
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


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
        return f"{self.n_frames} frames, {self.width}x{self.height}, {fmt_fps(self.fps)}, {what}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "n_frames": self.n_frames,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
        }


def frame_files(folder: Path) -> List[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FRAME_EXTS]
    return sorted(files, key=lambda p: natural_key(p.name))


def video_files(folder: Path) -> List[Path]:
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
    return one_line(text) or type(exc).__name__


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
        files = frame_files(p)
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
            raise VideoMetricsError(f"frame '{f}' of {label} could not be read: {one_line(exc)}") from None
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
        raise VideoMetricsError(f"frame '{path}' of {label} could not be read: {one_line(exc)}") from None
    return _to_rgb_uint8(img, f"frame '{path}' of {label}")


def _probe_gif(p: Path, label: str) -> VideoInfo:
    import imageio.v3 as iio

    try:
        props = iio.improps(p, plugin="pillow")
        meta = iio.immeta(p, index=0, plugin="pillow")
    except Exception as exc:
        raise VideoMetricsError(f"{label} could not be read as a GIF (corrupt or truncated?): {one_line(exc)}") from None
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
        for f in frame_files(p):
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
            raise VideoMetricsError(f"{label} failed while decoding (corrupt?): {one_line(exc)}") from None
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
