"""Record what the shipped weights must reproduce: the file's sha256 and the latents of one
fixed sample (tests/tinywan/test_weights.py compares against it).

    python -m tinywan.record_check tinywan/weights/tinywan.safetensors
"""

import argparse
import hashlib
import json
import os

import torch

from tinywan.sample import TinyWanT2V

PROMPT, SEED, STEPS = "a large red circle moves right on a plain background", 0, 4


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sample_latents(path: str) -> torch.Tensor:
    pipe = TinyWanT2V.from_pretrained(path)
    _, latents = pipe.generate(PROMPT, sampling_steps=STEPS, seed=SEED, return_latents=True)
    return latents[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    latents = sample_latents(args.weights)
    record = {"sha256": sha256(args.weights), "prompt": PROMPT, "seed": SEED, "steps": STEPS,
              "latents_first": latents.flatten()[:16].tolist(), "latents_mean_abs": latents.abs().mean().item()}
    out = os.path.splitext(args.weights)[0] + ".check.json"
    with open(out + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
