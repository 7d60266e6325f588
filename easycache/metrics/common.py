"""What every part of the metrics package shares: the error type, the program name in
messages, device resolution, the progress bar and small text helpers."""

from __future__ import annotations

import re
import sys
from typing import Optional, Union

PROG = "video_metrics"


class VideoMetricsError(Exception):
    """A user-facing problem (bad input, mismatch, ...). The message is one line."""


def fmt_fps(fps: Optional[float]) -> str:
    return "unknown fps" if fps is None else f"{fps:g} fps"


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def resolve_device(device: Optional[Union[str, "torch.device"]]):  # noqa: F821
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise VideoMetricsError(f"invalid --device {device!r}: {one_line(exc)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VideoMetricsError(f"--device {device} requested but CUDA is not available (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VideoMetricsError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return dev


def progress_bar(total: int, enabled: Optional[bool], unit: str, force: bool = False):
    from tqdm import tqdm

    if enabled is False:
        disable = True
    elif force:
        disable = False
    else:
        disable = None if enabled is None else not enabled  # None: only on a terminal
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True)
