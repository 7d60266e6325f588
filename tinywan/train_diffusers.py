"""Training command for the diffusers test bed (``tinywan.diffusers_bed``): a small
``WanTransformer3DModel`` on tinywan's data, in the convention the stock ``WanPipeline`` samples.

    python -m tinywan.train_diffusers --out runs/tinywan_diffusers
    python -m tinywan.train_diffusers --out runs/tinywan_diffusers --export tinywan/weights/tinywan_diffusers

Run it again with the same --out to resume (checkpoint written atomically every
--ckpt-minutes and at the end: weights, EMA, optimiser, random states, loss history).
--export DIR writes the EMA transformer with ``save_pretrained`` (fp16 safetensors by
default) and DIR/check.json (its sha256 and one recorded sample).

This reuses tinywan's training code rather than copying it: ``tinywan.train.Trainer``'s latent
bank (built here with the SHIPPED frozen autoencoder, whose latent statistics are kept), its DiT
loop (curriculum, CFG dropout, warm-up, grad clipping, EMA, loss log, checkpoint cadence,
--max-minutes) and its ``flow_matching_loss`` (x_sigma = (1 - sigma) x0 + sigma noise, target
noise - x0, timestep 1000 sigma, sigma shifted by --shift: the pipeline's convention). Two thin
adapters make that possible: ``WanContract`` gives the diffusers transformer tinywan's DiT call
(``model(list_of_latents, t=..., context=list_of_features, seq_len=...)``), and
``FrozenTextFeatures`` gives the frozen text encoder's padded features per caption, cached.
"""

import argparse
import json
import math
import os
import shutil
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tinywan import diffusers_bed as bed
from tinywan import record_check
from tinywan import train as tinywan_train
from tinywan.vae import FrameAutoencoder

CKPT, BANK = tinywan_train.CKPT, tinywan_train.BANK
RECIPE = tinywan_train.parse_args(["--out", "-"])  # tinywan's recipe: the defaults reused here
DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
MAX_EXPORT_BYTES = 20 * 2 ** 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r = RECIPE
    p.add_argument("--out", required=True, help="run folder: checkpoint, latent bank, loss log")
    p.add_argument("--seed", type=int, default=r.seed)
    p.add_argument("--threads", type=int, default=r.threads, help="torch threads (1 on a shared machine)")
    p.add_argument("--ckpt-minutes", type=float, default=r.ckpt_minutes)
    p.add_argument("--tinywan-weights", default=bed.TINYWAN_WEIGHTS,
                   help="shipped tinywan weights: frozen text encoder and frame autoencoder")
    # latent bank (tinywan's, encoded by the shipped autoencoder)
    p.add_argument("--bank", type=int, default=r.bank, help="videos encoded once")
    p.add_argument("--two-object-prob", type=float, default=r.two_object_prob)
    # transformer
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--text-tokens", type=int, default=bed.TEXT_TOKENS, help="prompt_embeds padded to this length")
    # training (tinywan's recipe)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=r.batch)
    p.add_argument("--lr", type=float, default=r.lr)
    p.add_argument("--warmup", type=int, default=r.warmup)
    p.add_argument("--ema", type=float, default=r.ema)
    p.add_argument("--shift", type=float, default=r.shift, help="timestep shift of the training noise levels")
    p.add_argument("--cfg-drop", type=float, default=r.cfg_drop, help="probability of training on the empty prompt")
    p.add_argument("--curriculum", type=float, default=r.curriculum,
                   help="fraction of steps on single-object videos only")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (checkpointed) after this long")
    # export
    p.add_argument("--export", metavar="DIR", help="write the EMA transformer (save_pretrained) and DIR/check.json, then exit")
    p.add_argument("--export-dtype", choices=DTYPES, default="fp16")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    return p.parse_args(argv)


def config_from_args(args) -> dict:
    return bed.transformer_config(heads=args.heads, head_dim=args.head_dim, ffn=args.ffn, layers=args.layers)


class WanContract(nn.Module):
    """The diffusers transformer behind tinywan's DiT call, so ``tinywan.train.flow_matching_loss``
    and ``Trainer.train_dit`` drive it unchanged: the list of latents is stacked, the list of
    text features zero-padded to [B, tokens, C] (``diffusers_bed.pad_features``, as at sampling)
    and ``t`` (= 1000 sigma) passed as the pipeline passes ``timestep``."""

    def __init__(self, transformer, text_tokens: int = bed.TEXT_TOKENS):
        super().__init__()
        self.transformer, self.text_tokens = transformer, text_tokens

    def seq_len_for(self, latent_shape) -> int:
        p = self.transformer.config.patch_size
        return math.prod(s // k for s, k in zip(latent_shape[1:], p))

    def forward(self, x, t, context, seq_len=None):
        out = self.transformer(hidden_states=torch.stack(list(x)), timestep=t,
                               encoder_hidden_states=bed.pad_features(context, self.text_tokens),
                               return_dict=False)[0]
        return list(out.float().unbind(0))


class FrozenTextFeatures(nn.Module):
    """tinywan's shipped text encoder, frozen: features per caption computed once (as the
    pipeline's ``text_embeds`` computes them) and reused. No trainable parameters."""

    def __init__(self, text_encoder):
        super().__init__()
        self.encoder = [text_encoder.eval().requires_grad_(False)]  # a list: not a submodule, not in state_dict
        self.cache = {}

    def forward(self, captions):
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        for c in missing:
            self.cache[c] = bed.prompt_features(self.encoder[0], [c])[0]  # unpadded [L, C]
        return [self.cache[c] for c in captions]


class ShippedAutoencoder(FrameAutoencoder):
    """The shipped frame autoencoder, frozen: ``Trainer.build_bank`` refits latent statistics on
    its first chunk; here the shipped statistics (those tinywan was trained with) are kept."""

    @torch.no_grad()
    def fit_latent_stats(self, videos):
        pass

    @classmethod
    def from_shipped(cls, path: str) -> "ShippedAutoencoder":
        _, vae = bed.load_tinywan_parts(path)
        ae = cls(**vae.config)
        ae.load_state_dict(vae.state_dict())
        return ae.eval().requires_grad_(False)


class DiffusersTrainer(tinywan_train.Trainer):
    """``tinywan.train.Trainer`` with the diffusers transformer as its DiT and the shipped text
    encoder and autoencoder frozen. Reused as they are: ``build_bank``, ``train_dit``,
    ``update_ema``, ``maybe_save``, ``out_of_time``."""

    def __init__(self, args):  # Trainer.__init__ builds tinywan's modules; this builds ours
        self.args = args
        os.makedirs(args.out, exist_ok=True)
        self.ckpt_path = os.path.join(args.out, CKPT)
        self.bank_path = os.path.join(args.out, BANK)
        torch.manual_seed(args.seed)
        self.config = config_from_args(args)
        self.transformer = bed.build_transformer(self.config, seed=args.seed)
        self.dit = WanContract(self.transformer, args.text_tokens)
        text_encoder, _ = bed.load_tinywan_parts(args.tinywan_weights)
        self.text = FrozenTextFeatures(text_encoder)
        self.vae = ShippedAutoencoder.from_shipped(args.tinywan_weights)
        self.ema = None
        self.state = {"stage": "bank", "ae_step": 0, "step": 0, "history": [], "ae_history": []}
        self.gen = torch.Generator().manual_seed(args.seed)
        self.np_rng = np.random.default_rng(args.seed)
        self.opt = torch.optim.AdamW(self.transformer.parameters(), lr=args.lr, weight_decay=0.01,
                                     betas=(0.9, 0.99))  # as tinywan.train
        self.last_save = time.time()
        self.started = time.time()
        if os.path.exists(self.ckpt_path):
            self.load()

    def pipeline_state(self, copy: bool = False) -> dict:
        state = {"transformer." + k: v.detach() for k, v in self.transformer.state_dict().items()}
        return {k: v.clone() for k, v in state.items()} if copy else state

    def save(self) -> None:
        ckpt = {
            "args": vars(self.args), "state": self.state, "config": self.config,
            "weights": self.pipeline_state(),
            "ema": self.ema if self.ema is not None else self.pipeline_state(),
            "opt": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(), "gen": self.gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
        }
        tinywan_train.atomic_save(ckpt, self.ckpt_path)
        self.last_save = time.time()

    def load(self) -> None:
        ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != self.config:
            raise ValueError(f"{self.ckpt_path} holds a transformer of config {ckpt['config']}, not {self.config}")
        self.state = ckpt["state"]
        self.transformer.load_state_dict(strip(ckpt["weights"]))
        self.ema = ckpt["ema"] if self.state["stage"] == "dit" else None
        self.opt.load_state_dict(ckpt["opt"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.gen.set_state(ckpt["gen"])
        self.np_rng.bit_generator.state = ckpt["np_rng"]
        tqdm.write(f"resumed from {self.ckpt_path}: stage {self.state['stage']}, step {self.state['step']}")

    def run(self) -> None:
        torch.set_num_threads(self.args.threads)
        tqdm.write(f"transformer: {bed.count_parameters(self.transformer) / 1e6:.2f} M parameters, "
                   f"{self.dit.seq_len_for(bed.LATENT_SHAPE)} tokens per video")
        if self.state["stage"] == "bank" and not self.out_of_time():
            self.build_bank()
        if self.state["stage"] == "dit" and not self.out_of_time():
            self.train_dit()


def strip(state: dict, prefix: str = "transformer.") -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def cast_for_export(transformer, dtype: torch.dtype):
    """Cast to ``dtype`` except the modules diffusers keeps in fp32 (``_keep_in_fp32_modules``:
    time embedder, modulation tables, norms), as ``from_pretrained(torch_dtype=...)`` would."""
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    for name, param in transformer.named_parameters():
        if not keep.intersection(name.split(".")):
            param.data = param.data.to(dtype)
    return transformer


def export(args) -> dict:
    """EMA transformer -> save_pretrained(DIR) in --export-dtype, then DIR/check.json."""
    ckpt = torch.load(os.path.join(args.out, CKPT), map_location="cpu", weights_only=False)
    transformer = bed.build_transformer(ckpt["config"], adaln_zero=False)
    transformer.load_state_dict(strip(ckpt["weights" if args.raw else "ema"]))
    out = args.export
    os.makedirs(out, exist_ok=True)
    tmp = f"{out.rstrip(os.sep)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cast_for_export(transformer, DTYPES[args.export_dtype]).save_pretrained(tmp, safe_serialization=True)
    size = os.path.getsize(os.path.join(tmp, bed.WEIGHTS_FILE))
    if size > MAX_EXPORT_BYTES:
        shutil.rmtree(tmp)
        raise SystemExit(f"{bed.WEIGHTS_FILE} would be {size / 2 ** 20:.1f} MiB (> 20 MiB): export in fp16")
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(out, name))
    os.rmdir(tmp)
    record = record_sample(out)
    record.update({"dtype": args.export_dtype, "ema": not args.raw, "step": ckpt["state"]["step"],
                   "training_args": {k: v for k, v in ckpt["args"].items()
                                     if k not in ("export", "export_dtype", "raw", "tinywan_weights")},
                   "loss_history": [(h["step"], round(h["loss"], 4)) for h in ckpt["state"]["history"]]})
    path = os.path.join(out, bed.CHECK)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"{out}: {size / 2 ** 20:.1f} MiB ({args.export_dtype}), step {record['step']}, sha256 {record['sha256'][:12]}")
    return record


def record_sample(weights_dir: str, tinywan_weights: str = bed.TINYWAN_WEIGHTS) -> dict:
    """What the shipped weights must reproduce: the file's sha256 and the latents of one sample
    (tinywan's recorded prompt, seed and steps; the stock pipeline with the Euler scheduler)."""
    torch.set_num_threads(1)
    loaded = bed.load(weights_dir, tinywan_weights)
    pipe = bed.make_pipeline(loaded.transformer)
    _, latents = bed.generate(pipe, loaded.text_encoder, loaded.autoencoder, record_check.PROMPT,
                              seed=record_check.SEED, steps=record_check.STEPS, return_latents=True)
    return {"sha256": bed.sha256(os.path.join(weights_dir, bed.WEIGHTS_FILE)), "file": bed.WEIGHTS_FILE,
            "prompt": record_check.PROMPT, "seed": record_check.SEED, "steps": record_check.STEPS,
            "scheduler": "flowmatch", "guidance_scale": 5.0,
            "latents_first": latents.flatten()[:16].tolist(), "latents_mean_abs": latents.abs().mean().item()}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.export:
        export(args)
    else:
        DiffusersTrainer(args).run()


if __name__ == "__main__":
    main()
