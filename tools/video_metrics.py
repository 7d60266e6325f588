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

The implementation, and the conventions of every metric, are in the package
``easycache.metrics``; this file is the command and re-exports its API.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from easycache.metrics import *  # noqa: E402,F401,F403
from easycache.metrics import (  # noqa: E402,F401
    ALIGN_CHOICES,
    CONVENTIONS,
    CSV_COLUMNS,
    FPS_REL_TOL,
    FRAME_EXTS,
    LPIPS_BACKBONES,
    PROG,
    VIDEO_EXTS,
    __all__,
    build_parser,
    main,
)

if __name__ == "__main__":
    sys.exit(main())
