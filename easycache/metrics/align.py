"""Alignment of a pair before decoding: frame count (trim), size (resize) and fps checks."""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple, Union

from easycache.metrics.common import VideoMetricsError
from easycache.metrics.decode import VideoInfo
from easycache.metrics.frames import to_unit_float

ALIGN_CHOICES = ("none", "trim", "resize")
FPS_REL_TOL = 0.01  # fps values differing by more than 1% are a mismatch


def parse_align(align: Union[None, str, Iterable[str]]) -> Tuple[bool, bool]:
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


def plan_alignment(
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


def resize_frames(x, size: Tuple[int, int]):
    import torch
    import torch.nn.functional as F

    y = to_unit_float(x).permute(0, 3, 1, 2)
    y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return y.clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous().to(torch.float32)
