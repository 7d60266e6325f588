import os

import imageio
import numpy as np
import torch


def save_videos_grid(videos: torch.Tensor, path: str, rescale=False, n_rows=1, fps=24):
    """[B, C, T, H, W] in [0, 1] (or [-1, 1] with rescale) -> a video file, batch side by side."""
    frames = []
    for frame in videos.permute(2, 0, 3, 4, 1):  # T, B, H, W, C
        frame = torch.cat(list(frame), dim=1)
        if rescale:
            frame = (frame + 1.0) / 2.0
        frames.append((frame.clamp(0, 1) * 255).numpy().astype(np.uint8))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    imageio.mimsave(path, frames, fps=fps)
