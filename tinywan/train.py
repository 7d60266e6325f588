"""Training command: frame autoencoder, then a latent bank, then the DiT + text encoder.

    python -m tinywan.train --out runs/tinywan --seed 0

Run it again with the same --out to resume: the checkpoint (written atomically every
--ckpt-minutes and at the end) holds every stage's weights, the optimiser, the EMA, the
random states and the loss history. Stage 1 trains the autoencoder on fresh procedural
frames; stage 2 encodes a fixed bank of videos once (so DiT steps cost only the DiT);
stage 3 trains the DiT with flow matching, curriculum (single objects first), CFG
dropout and an EMA of the weights.
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from tinywan import data
from tinywan.model import TinyWanModel
from tinywan.sample import pipeline_state_dict, shift_sigma
from tinywan.text import TextEncoder
from tinywan.vae import FrameAutoencoder

CKPT = "ckpt.pt"
BANK = "bank.pt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder: checkpoint, latent bank, log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    p.add_argument("--ckpt-minutes", type=float, default=4.0)
    # autoencoder
    p.add_argument("--ae-steps", type=int, default=1200)
    p.add_argument("--ae-batch", type=int, default=64, help="frames per autoencoder step")
    p.add_argument("--ae-lr", type=float, default=2e-3)
    p.add_argument("--ae-width", type=int, default=48)
    p.add_argument("--z-dim", type=int, default=8)
    # latent bank
    p.add_argument("--bank", type=int, default=16000, help="videos encoded once for the DiT")
    p.add_argument("--two-object-prob", type=float, default=0.25)
    # DiT
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--text-dim", type=int, default=128)
    p.add_argument("--shift", type=float, default=3.0, help="timestep shift of the training noise levels")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="probability of training on the empty prompt")
    p.add_argument("--curriculum", type=float, default=0.15,
                   help="fraction of DiT steps on single-object videos only")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (no faster than fp32 on the CPU measured)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (checkpointed) after this long")
    return p.parse_args(argv)


def atomic_save(obj, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def video_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def build(args):
    vae = FrameAutoencoder(z_dim=args.z_dim, width=args.ae_width)
    text = TextEncoder(dim=args.text_dim)
    dit = TinyWanModel(in_dim=args.z_dim, out_dim=args.z_dim, dim=args.dim, ffn_dim=args.ffn,
                       text_dim=args.text_dim, num_heads=args.heads, num_layers=args.layers)
    return vae, text, dit


def flow_matching_loss(dit, text, latents: torch.Tensor, captions, generator, shift: float,
                       cfg_drop: float) -> torch.Tensor:
    """MSE between the DiT's velocity and noise - x0 at a shifted random noise level."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator)
    sigma = shift_sigma(torch.rand(b, generator=generator), shift)
    drop = torch.rand(b, generator=generator) < cfg_drop
    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
    s = sigma.view(b, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    pred = dit(list(noisy), t=sigma * 1000, context=text(captions), seq_len=dit.seq_len_for(latents.shape[1:]))
    return torch.nn.functional.mse_loss(torch.stack(pred), noise - latents)


class Trainer:
    def __init__(self, args):
        self.args = args
        os.makedirs(args.out, exist_ok=True)
        self.ckpt_path = os.path.join(args.out, CKPT)
        self.bank_path = os.path.join(args.out, BANK)
        torch.manual_seed(args.seed)
        self.vae, self.text, self.dit = build(args)
        self.ema = None
        self.state = {"stage": "ae", "ae_step": 0, "step": 0, "history": [], "ae_history": []}
        self.gen = torch.Generator().manual_seed(args.seed)
        self.np_rng = np.random.default_rng(args.seed)
        self.ae_opt = torch.optim.AdamW(self.vae.parameters(), lr=args.ae_lr, weight_decay=0.0)
        params = list(self.dit.parameters()) + list(self.text.parameters())
        self.opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
        self.last_save = time.time()
        self.started = time.time()
        if os.path.exists(self.ckpt_path):
            self.load()

    # Checkpoints -------------------------------------------------------------------

    def pipeline_state(self, copy: bool = False) -> dict:
        state = pipeline_state_dict(self.dit, self.text, self.vae)
        return {k: v.clone() for k, v in state.items()} if copy else state

    def save(self) -> None:
        ckpt = {
            "args": vars(self.args), "state": self.state,
            "config": {"model": self.dit.config, "text_encoder": self.text.config, "vae": self.vae.config},
            "weights": self.pipeline_state(),
            "ema": self.ema if self.ema is not None else self.pipeline_state(),
            "ae_opt": self.ae_opt.state_dict(), "opt": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(), "gen": self.gen.get_state(),
            "np_rng": self.np_rng.bit_generator.state,
        }
        atomic_save(ckpt, self.ckpt_path)
        self.last_save = time.time()

    def load(self) -> None:
        ckpt = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        self.state = ckpt["state"]
        w = ckpt["weights"]
        for prefix, module in (("model.", self.dit), ("text_encoder.", self.text), ("vae.", self.vae)):
            module.load_state_dict({k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)})
        self.ema = ckpt["ema"] if self.state["stage"] == "dit" else None
        self.ae_opt.load_state_dict(ckpt["ae_opt"])
        self.opt.load_state_dict(ckpt["opt"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.gen.set_state(ckpt["gen"])
        self.np_rng.bit_generator.state = ckpt["np_rng"]
        tqdm.write(f"resumed from {self.ckpt_path}: stage {self.state['stage']}, "
                   f"autoencoder step {self.state['ae_step']}, DiT step {self.state['step']}")

    def maybe_save(self) -> None:
        if time.time() - self.last_save > 60 * self.args.ckpt_minutes:
            self.save()

    def out_of_time(self) -> bool:
        m = self.args.max_minutes
        return m is not None and time.time() - self.started > 60 * m

    # Stage 1: autoencoder ------------------------------------------------------------

    def ae_batch(self) -> torch.Tensor:
        frames = []
        per_video = 8
        for _ in range(self.args.ae_batch // per_video):
            video, _, _ = data.make_video(int(self.np_rng.integers(2 ** 62)),
                                          two_object_prob=self.args.two_object_prob)
            idx = self.np_rng.choice(data.FRAMES, per_video, replace=False)
            frames.append(data.to_model_space(video[idx]).transpose(0, 1))  # [n, 3, H, W]
        return torch.cat(frames)

    def train_ae(self) -> None:
        a = self.args
        bar = tqdm(total=a.ae_steps, initial=self.state["ae_step"], desc="autoencoder", dynamic_ncols=True)
        running = None
        while self.state["ae_step"] < a.ae_steps:
            step = self.state["ae_step"]
            lr = a.ae_lr * 0.5 * (1 + math.cos(math.pi * step / a.ae_steps))  # cosine to 0
            for g in self.ae_opt.param_groups:
                g["lr"] = lr
            loss = self.vae.loss(self.ae_batch())
            self.ae_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.ae_opt.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            self.state["ae_step"] += 1
            if self.state["ae_step"] % 50 == 0:
                self.state["ae_history"].append((self.state["ae_step"], running))
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            self.maybe_save()
            if self.out_of_time():
                break
        bar.close()
        if self.state["ae_step"] >= a.ae_steps:
            self.state["stage"] = "bank"
        self.save()

    # Stage 2: latent bank --------------------------------------------------------------

    @torch.no_grad()
    def build_bank(self) -> None:
        a = self.args
        videos, captions, two = [], [], []
        chunk = 64
        latents = []
        self.vae.eval()
        for i in tqdm(range(a.bank), desc="latent bank", dynamic_ncols=True):
            video, caption, scene = data.make_video(video_seed(a.seed, i), two_object_prob=a.two_object_prob)
            videos.append(data.to_model_space(video))
            captions.append(caption)
            two.append(len(scene.objects) == 2)
            if len(videos) == chunk or i == a.bank - 1:
                batch = torch.stack(videos)
                if not latents:  # normalise latents with statistics of the first chunk
                    self.vae.fit_latent_stats(batch)
                latents.append(self.vae.encode(batch).half())
                videos = []
        bank = {"latents": torch.cat(latents), "captions": captions, "two_objects": torch.tensor(two),
                "seed": a.seed}
        atomic_save(bank, self.bank_path)
        self.state["stage"] = "dit"
        self.ema = self.pipeline_state(copy=True)
        self.save()

    # Stage 3: DiT ----------------------------------------------------------------------

    def train_dit(self) -> None:
        a = self.args
        torch.set_num_threads(a.threads)
        bank = torch.load(self.bank_path, map_location="cpu", weights_only=False)
        latents, captions = bank["latents"], bank["captions"]
        single = torch.nonzero(~bank["two_objects"]).flatten()
        everything = torch.arange(len(captions))
        if self.ema is None:
            self.ema = self.pipeline_state(copy=True)
        self.dit.train(), self.text.train(), self.vae.eval()
        bar = tqdm(total=a.steps, initial=self.state["step"], desc="DiT", dynamic_ncols=True)
        running, window, t_window = None, [], time.time()
        while self.state["step"] < a.steps:
            step = self.state["step"]
            pool = single if step < a.curriculum * a.steps else everything
            idx = pool[torch.randint(len(pool), (a.batch,), generator=self.gen)]
            lr = a.lr * min(1.0, (step + 1) / a.warmup)
            for g in self.opt.param_groups:
                g["lr"] = lr
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
                loss = flow_matching_loss(self.dit, self.text, latents[idx].float(),
                                          [captions[i] for i in idx.tolist()], self.gen, a.shift, a.cfg_drop)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self.dit.parameters()) + list(self.text.parameters()), 1.0)
            self.opt.step()
            self.update_ema(step)
            self.state["step"] += 1
            window.append(loss.item())
            running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
            if self.state["step"] % 50 == 0:
                rate = len(window) / (time.time() - t_window)
                self.state["history"].append({"step": self.state["step"], "loss": float(np.mean(window)),
                                              "steps_per_s": rate, "time": time.time()})
                with open(os.path.join(a.out, "loss.jsonl"), "a") as f:
                    f.write(json.dumps(self.state["history"][-1]) + "\n")
                window, t_window = [], time.time()
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}")
            self.maybe_save()
            if self.out_of_time():
                break
        bar.close()
        self.save()

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = min(self.args.ema, (1 + step) / (10 + step))
        current = self.pipeline_state()
        for k, v in current.items():
            if v.is_floating_point() and not k.startswith("vae."):
                self.ema[k].mul_(decay).add_(v, alpha=1 - decay)
            else:
                self.ema[k].copy_(v)

    def run(self) -> None:
        torch.set_num_threads(self.args.threads)
        if self.state["stage"] == "ae":
            self.train_ae()
        if self.state["stage"] == "bank" and not self.out_of_time():
            self.build_bank()
        if self.state["stage"] == "dit" and not self.out_of_time():
            self.train_dit()


def main(argv=None):
    args = parse_args(argv)
    Trainer(args).run()


if __name__ == "__main__":
    main()
