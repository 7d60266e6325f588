"""Savers with Wan2.1's signatures (wan/utils/utils.py): ``cache_video`` writes an mp4
with imageio and returns the path, or prints the error and returns None on failure."""

import argparse

import imageio
import numpy as np
import torch


def _to_uint8_frames(tensor, value_range):
    """[1, C, F, H, W] in value_range -> [F, H, W, C] uint8."""
    low, high = min(value_range), max(value_range)
    tensor = (tensor.clamp(low, high) - low) / (high - low)
    return (tensor[0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()


def cache_video(tensor, save_file=None, fps=30, suffix='.mp4', nrow=8, normalize=True, value_range=(-1, 1), retry=5):
    error = None
    for _ in range(retry):
        try:
            writer = imageio.get_writer(save_file, fps=fps, codec='libx264', quality=8)
            for frame in _to_uint8_frames(tensor, value_range):
                writer.append_data(frame)
            writer.close()
            return save_file
        except Exception as e:
            error = e
    print(f'cache_video failed, error: {error}', flush=True)
    return None


def cache_image(tensor, save_file, nrow=8, normalize=True, value_range=(-1, 1), retry=5):
    for _ in range(retry):
        try:
            frame = _to_uint8_frames(tensor[:, :, None], value_range)[0]
            imageio.imwrite(save_file, np.ascontiguousarray(frame))
            return save_file
        except Exception:
            continue


def str2bool(v):
    if isinstance(v, bool):
        return v
    if v.lower() in ('yes', 'true', 't', 'y', '1'):
        return True
    if v.lower() in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError('Boolean value expected (True/False)')
