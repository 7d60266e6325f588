"""Prompt-following accuracy of a trained model, measured by the pixel checker.

    python -m tinywan.evaluate --weights runs/tinywan/ckpt.pt --n 48

Prompts come from held-out generator seeds (never in the training bank); the same
prompts' ground-truth videos, and their autoencoder reconstructions, are scored too,
so the model's numbers can be read against the checker's and the autoencoder's ceiling.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from tinywan import checker, data
from tinywan.sample import TinyWanT2V

HELD_OUT_SEED = 10 ** 9  # training banks use seeds near seed * 1_000_003


def held_out_scenes(n: int, two_object_prob: float = 0.25):
    return [data.make_video(HELD_OUT_SEED + i, two_object_prob=two_object_prob) for i in range(n)]


@torch.no_grad()
def evaluate(pipe: TinyWanT2V, n: int = 48, steps: int = 30, guide_scale: float = 5.0,
             shift: float = 3.0, seed: int = 0, batch: int = 16, save_dir: str = None) -> dict:
    items = held_out_scenes(n)
    truth = [checker.check(v, s) for v, _, s in items]
    chances = [checker.chance(s) for _, _, s in items]
    recon_videos = pipe.vae.decode(pipe.vae.encode(torch.stack([data.to_model_space(v) for v, _, _ in items])))
    recon = [checker.check(data.from_model_space(v), s) for v, (_, _, s) in zip(recon_videos, items)]
    generated, started = [], time.perf_counter()
    for start in range(0, n, batch):
        chunk = items[start:start + batch]
        videos = pipe.generate([c for _, c, _ in chunk], sampling_steps=steps, guide_scale=guide_scale,
                               shift=shift, seed=seed + start)
        generated += [data.from_model_space(v) for v in videos]
    seconds = time.perf_counter() - started
    model = [checker.check(v, s) for v, (_, _, s) in zip(generated, items)]
    if save_dir:
        save_examples(save_dir, generated[:8], [c for _, c, _ in items[:8]])
    return {"n": n, "steps": steps, "guide_scale": guide_scale, "shift": shift,
            "seconds_per_video": seconds / n,
            "model": checker.summarize(model, chances),
            "autoencoder_reconstruction": checker.summarize(recon, chances),
            "ground_truth": checker.summarize(truth, chances)}


def save_examples(folder: str, videos, captions) -> None:
    """A contact sheet PNG (one row per video, every other frame) and the captions."""
    import imageio.v2 as imageio
    os.makedirs(folder, exist_ok=True)
    rows = [np.concatenate(list(v[::2]), axis=1) for v in videos]
    sheet = (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)
    sheet = sheet.repeat(3, 0).repeat(3, 1)
    imageio.imwrite(os.path.join(folder, "samples.png"), sheet)
    with open(os.path.join(folder, "samples.txt"), "w") as f:
        f.write("\n".join(captions) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="a training checkpoint or a .safetensors export")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guide-scale", type=float, default=5.0)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--examples", help="folder for a contact sheet of samples")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = TinyWanT2V.from_pretrained(args.weights, ema=not args.raw)
    result = evaluate(pipe, args.n, args.steps, args.guide_scale, args.shift, args.seed,
                      save_dir=args.examples)
    for name in ("ground_truth", "autoencoder_reconstruction", "model"):
        print(f"{name}:\n{checker.format_summary(result[name])}")
    print(f"{result['seconds_per_video']:.2f} s per video ({args.steps} steps, cond + uncond)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
