"""The DiT honours Wan2.1's forward contract and training lowers the loss. (The Wan2.1 adapter
wrapping tinywan is part of the adapter x policy contract, tests/contract.)"""

import math

import pytest
import torch

from tinywan import data
from tinywan.model import TinyWanModel
from tinywan.sample import TinyWanT2V, sample_latents, shift_sigma, sigmas_for, trajectory_diagnostics
from tinywan.text import TextEncoder
from tinywan.train import Trainer, flow_matching_loss, parse_args
from tinywan.vae import FrameAutoencoder
from helpers import loss_before_and_after_one_step

SMALL = dict(dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_dim=16)


def small_pipe(seed=0):
    torch.manual_seed(seed)
    model = TinyWanModel(**SMALL)
    # adaLN-Zero starts as the zero function; perturb so the trajectory is not trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return TinyWanT2V(model, TextEncoder(dim=16, layers=1, heads=2), FrameAutoencoder(width=8))


def test_forward_contract():
    pipe = small_pipe()
    model, text = pipe.model, pipe.text_encoder
    x = [torch.randn(8, 16, 8, 8), torch.randn(8, 16, 8, 8)]
    context = text(["a small red circle moves left on a plain background", ""])
    out = model(x, t=torch.tensor([999.0, 10.0]), context=context, seq_len=128)
    assert isinstance(out, list) and len(out) == 2
    assert all(o.shape == (8, 16, 8, 8) and o.dtype == torch.float32 for o in out)
    # unbatched text tokens [L, C] of any length; uncond is the one-token empty prompt
    assert context[0].shape == (11, 16) and context[1].shape == (1, 16)
    # a video's output does not depend on its batch mates
    alone = model(x[:1], t=torch.tensor([999.0]), context=context[:1], seq_len=128)[0]
    assert torch.allclose(alone, out[0], atol=1e-5)
    # padding to a longer seq_len (as Wan's pipelines do) changes nothing
    padded = model(x[:1], t=torch.tensor([999.0]), context=context[:1], seq_len=160)[0]
    assert torch.allclose(padded, alone, atol=1e-5)
    with pytest.raises(ValueError):
        model(x, t=torch.tensor([1.0, 1.0]), context=context, seq_len=64)
    # a bf16 model still returns fp32, as Wan's does
    out16 = model.to(torch.bfloat16)([u.bfloat16() for u in x], t=torch.tensor([5.0, 5.0]),
                                     context=[c.bfloat16() for c in context], seq_len=128)
    assert all(o.dtype == torch.float32 for o in out16)


def test_timestep_shift_matches_wan():
    s = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(shift_sigma(s, 5.0), 5 * s / (1 + 4 * s))
    sig = sigmas_for(10, 3.0)
    assert sig[0] == 1 and sig[-1] == 0 and torch.all(sig[1:] < sig[:-1])


def test_trajectory_diagnostics():
    rows = trajectory_diagnostics(small_pipe(), "a small red circle bounces on a textured background",
                                  sampling_steps=6)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        assert all(math.isfinite(r[k]) and r[k] >= 0 for k in ("k", "err_reuse_delta", "err_reuse_output"))


def test_one_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model, text = TinyWanModel(**SMALL), TextEncoder(dim=16, layers=1, heads=2)
    latents = torch.randn(4, 8, 16, 8, 8)
    captions = [data.make_video(s)[1] for s in range(4)]
    opt = torch.optim.AdamW(list(model.parameters()) + list(text.parameters()), lr=3e-3)

    def loss():
        return flow_matching_loss(model, text, latents, captions, torch.Generator().manual_seed(1),
                                  shift=3.0, cfg_drop=0.0)
    before, after = loss_before_and_after_one_step(loss, opt)
    assert after < before


def test_training_command_resumes(tmp_path):
    argv = ["--out", str(tmp_path), "--ae-steps", "2", "--ae-batch", "8", "--ae-width", "8",
            "--bank", "4", "--steps", "2", "--batch", "2", "--dim", "32", "--layers", "1",
            "--heads", "2", "--ffn", "32", "--text-dim", "16"]
    Trainer(parse_args(argv)).run()
    first = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert first["state"]["stage"] == "dit" and first["state"]["step"] == 2
    argv[argv.index("--steps") + 1] = "3"
    Trainer(parse_args(argv)).run()  # picks up at step 2
    second = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert second["state"]["step"] == 3 and second["state"]["ae_step"] == 2
    pipe = TinyWanT2V.from_pretrained(str(tmp_path / "ckpt.pt"))
    video = pipe.generate("a small red circle moves left on a plain background", sampling_steps=2)
    assert video.shape == (3, 16, 32, 32)
    pipe.save_safetensors(str(tmp_path / "w.safetensors"))
    again = TinyWanT2V.from_pretrained(str(tmp_path / "w.safetensors"))
    assert torch.equal(again.generate("a small red circle moves left on a plain background", sampling_steps=2),
                       video)
