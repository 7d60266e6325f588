"""Helpers with Wan2.2's names and signatures (wan/utils/utils.py upstream), written for the
stand-in. ``save_video`` writes an mp4 with imageio (imageio-ffmpeg) and, like upstream, returns
None and logs instead of raising when writing fails; ``merge_video_audio`` is a no-op (no s2v
here); ``masks_like`` and ``best_output_size`` follow the rules TI2V-5B relies on."""

import argparse
import binascii
import logging
import os
import os.path as osp

import imageio
import numpy as np
import torch

__all__ = ['save_video', 'save_image', 'str2bool']


def rand_name(length=8, suffix=''):
    name = binascii.b2a_hex(os.urandom(length)).decode('utf-8')
    if suffix:
        name += suffix if suffix.startswith('.') else '.' + suffix
    return name


def merge_video_audio(video_path: str, audio_path: str):
    """Stand-in: nothing to merge (the s2v pipeline is not part of it)."""
    logging.info(f"merge_video_audio: stand-in, {video_path} left as it is")


def _grid(batch, nrow, padding=2):
    """[B, C, H, W] -> one [C, H', W'] image, ``nrow`` images a row (a single image unchanged)."""
    if batch.size(0) == 1:
        return batch[0]
    count, channels, height, width = batch.shape
    cols = min(nrow, count)
    rows = (count + cols - 1) // cols
    grid = batch.new_zeros(channels, rows * (height + padding) + padding, cols * (width + padding) + padding)
    for index, image in enumerate(batch):
        top = padding + (index // cols) * (height + padding)
        left = padding + (index % cols) * (width + padding)
        grid[:, top:top + height, left:left + width] = image
    return grid


def _to_uint8(tensor, normalize, value_range):
    low, high = min(value_range), max(value_range)
    tensor = tensor.float().clamp(low, high)
    if normalize:
        tensor = (tensor - low) / max(high - low, 1e-5)
    return (tensor * 255).clamp(0, 255).to(torch.uint8)


def save_video(tensor, save_file=None, fps=30, suffix='.mp4', nrow=8, normalize=True, value_range=(-1, 1)):
    """``tensor``: [B, C, T, H, W]; each frame is the batch laid out ``nrow`` a row. Returns None."""
    cache_file = osp.join('/tmp', rand_name(suffix=suffix)) if save_file is None else save_file
    try:
        frames = torch.stack([_grid(frame, nrow) for frame in tensor.unbind(2)])  # [T, C, H, W]
        frames = _to_uint8(frames, normalize, value_range).permute(0, 2, 3, 1).cpu().numpy()
        writer = imageio.get_writer(cache_file, fps=fps, codec='libx264', quality=8)
        for frame in frames:
            writer.append_data(np.ascontiguousarray(frame))
        writer.close()
    except Exception as e:
        logging.info(f'save_video failed, error: {e}')


def save_image(tensor, save_file, nrow=8, normalize=True, value_range=(-1, 1)):
    """``tensor``: [B, C, H, W] (or [C, H, W]) written as one image; returns the path, or None."""
    try:
        batch = tensor if tensor.dim() == 4 else tensor[None]
        image = _to_uint8(_grid(batch, nrow), normalize, value_range).permute(1, 2, 0).cpu().numpy()
        imageio.imwrite(save_file, np.ascontiguousarray(image))
        return save_file
    except Exception as e:
        logging.info(f'save_image failed, error: {e}')


def str2bool(v):
    """'yes'/'true'/'t'/'y'/'1' -> True, 'no'/'false'/'f'/'n'/'0' -> False (any case)."""
    if isinstance(v, bool):
        return v
    value = v.lower()
    if value in ('yes', 'true', 't', 'y', '1'):
        return True
    if value in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError('Boolean value expected (True/False)')


def to_tensor(img):
    """A PIL image -> float32 [C, H, W] in [0, 1] (what torchvision's ``to_tensor`` gives for RGB;
    the stand-in avoids importing torchvision)."""
    array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def masks_like(tensor, zero=False, generator=None, p=0.2):
    """Two lists of all-ones masks shaped like the tensors in ``tensor`` (a list). With ``zero``
    the first frame (dim 1) of both is zeroed, which TI2V uses to hold an image latent fixed and
    give its tokens t = 0; with a ``generator`` that happens only with probability ``p``, and the
    first mask's frame then gets a small random value instead of 0 (training-time noise)."""
    assert isinstance(tensor, list)
    out1 = [torch.ones_like(u) for u in tensor]
    out2 = [torch.ones_like(u) for u in tensor]
    if not zero:
        return out1, out2
    for m1, m2 in zip(out1, out2):
        if generator is None:
            m1[:, 0] = 0
            m2[:, 0] = 0
        elif torch.rand(1, generator=generator, device=generator.device).item() < p:
            level = torch.normal(-3.5, 0.5, size=(1,), generator=generator, device=generator.device).exp()
            m1[:, 0] = level.to(m1.dtype)
            m2[:, 0] = 0
    return out1, out2


def best_output_size(w, h, dw, dh, expected_area):
    """The (width, height), multiples of (dw, dh) with area at most ``expected_area``, whose aspect
    ratio is closest to w / h: of the size fitted width-first and the one fitted height-first,
    the one that distorts the ratio less (height-first on a tie)."""
    ratio = w / h
    width = (expected_area * ratio) ** 0.5
    height = expected_area / width

    def fit(first, step_first, step_second):
        a = int(first // step_first * step_first)
        b = int(expected_area / a // step_second * step_second)
        return a, b

    ow1, oh1 = fit(width, dw, dh)
    oh2, ow2 = fit(height, dh, dw)
    assert ow1 * oh1 <= expected_area and ow2 * oh2 <= expected_area

    def distortion(ow, oh):
        return max(ratio / (ow / oh), (ow / oh) / ratio)

    return (ow1, oh1) if distortion(ow1, oh1) < distortion(ow2, oh2) else (ow2, oh2)
