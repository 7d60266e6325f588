"""Export a training checkpoint's EMA weights to one safetensors file (the shipped form).

    python -m tinywan.export runs/tinywan/ckpt.pt tinywan/tinywan.safetensors
"""

import argparse
import os

import torch

from tinywan.sample import TinyWanT2V

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    args = p.parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    pipe = TinyWanT2V.from_pretrained(args.checkpoint, ema=not args.raw)
    meta = {"training_args": " ".join(f"--{k.replace('_', '-')} {v}" for k, v in ckpt["args"].items()
                                      if v is not None and not isinstance(v, bool)),
            "dit_step": ckpt["state"]["step"], "autoencoder_step": ckpt["state"]["ae_step"]}
    tmp = f"{args.output}.tmp-{os.getpid()}.safetensors"
    pipe.save_safetensors(tmp, DTYPES[args.dtype], meta)
    os.replace(tmp, args.output)
    print(f"{args.output}: {os.path.getsize(args.output) / 2 ** 20:.1f} MiB, DiT step {meta['dit_step']}")


if __name__ == "__main__":
    main()
