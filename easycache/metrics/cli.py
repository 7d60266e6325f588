"""The command line: flags, checks before any decoding, the run, exit statuses."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

from easycache.metrics.align import parse_align, plan_alignment
from easycache.metrics.common import PROG, VideoMetricsError, one_line, resolve_device
from easycache.metrics.compare import compare_videos
from easycache.metrics.core import VideoMetrics
from easycache.metrics.decode import frame_files, probe_video, video_files
from easycache.metrics.folders import FolderMetrics, compare_folders
from easycache.metrics.lpips import LPIPS_BACKBONES, resolve_lpips
from easycache.metrics.report import format_folders, format_pair
from easycache.outputs import folder_problem
from easycache.metrics.writers import CSV_COLUMNS, require_matplotlib, write_csv, write_json, write_plot


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
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --json/--csv/--plot file (default: refuse; an input is never replaced)")
    p.add_argument("--per_frame", action="store_true", help="also print the per-frame table")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _check_output_path(path: Optional[str], flag: str, inputs: Sequence[Path], overwrite: bool) -> None:
    """Before any work: an output is a file path, never one of the inputs (nor inside an input
    folder), replaced only with --overwrite, in a folder that can be written."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise VideoMetricsError(f"{flag} {path} is a folder, expected a file path")
    for source in inputs:
        if source.exists() and (p.resolve() == source.resolve() or source.resolve() in p.resolve().parents):
            raise VideoMetricsError(f"{flag} {path} would write over the input {source}; choose another path")
    if p.exists() and not overwrite:
        raise VideoMetricsError(f"{flag} {path} exists; pass --overwrite to replace it")
    problem = folder_problem(str(p.parent))
    if problem:
        raise VideoMetricsError(f"{flag} {path}: {problem}")


def _err(msg: str) -> None:
    print(f"{PROG}: error: {one_line(msg)}", file=sys.stderr, flush=True)


def _input_kind(p: Path) -> str:
    """'file', 'frames' (folder of images), 'videos' (folder of videos / frame folders) or 'empty'."""
    if not p.is_dir():
        return "file"
    if video_files(p):
        return "videos"
    if frame_files(p):
        return "frames"
    if any(d.is_dir() and not d.name.startswith(".") and frame_files(d) for d in p.iterdir()):
        return "videos"
    return "empty"


def _run(args) -> int:
    if args.chunk_frames < 1:
        raise VideoMetricsError("--chunk_frames must be >= 1")
    align = args.align or ["none"]
    trim, resize = parse_align(align)
    outputs = [getattr(args, flag) for flag in ("json", "csv", "plot") if getattr(args, flag)]
    if len({Path(o).resolve() for o in outputs}) < len(outputs):
        raise VideoMetricsError(f"--json, --csv and --plot must name different files, got {' '.join(outputs)}")
    for flag in ("json", "csv", "plot"):
        _check_output_path(getattr(args, flag), "--" + flag, [Path(args.original), Path(args.generated)],
                           args.overwrite)
    if args.plot:
        require_matplotlib()
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
        plan_alignment(oi, gi, trim, resize, args.ignore_fps)
        infos = (oi, gi)
    device = resolve_device(args.device)

    if args.no_lpips:
        model, lpips_status = None, "disabled (--no_lpips)"
    else:
        model, lpips_status = resolve_lpips("auto", args.lpips_net, args.lpips_weights, device,
                                             args.lpips_download, warn=False)
        if lpips_status:
            print(f"{PROG}: warning: LPIPS unavailable: {one_line(lpips_status)}", file=sys.stderr, flush=True)
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
            print(f"{PROG}: warning: LPIPS unavailable: {one_line(result.lpips_unavailable)}", file=sys.stderr)
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
        write_json(args.json, result, settings, overwrite=args.overwrite)
        written.append(args.json)
    if args.csv:
        write_csv(args.csv, result, overwrite=args.overwrite)
        written.append(args.csv)
    if args.plot:
        write_plot(args.plot, result, overwrite=args.overwrite)
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
