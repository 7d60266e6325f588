"""Checks of wan2_1/easycache_generate.py against a real Wan2.1 checkout, on a CPU, with a
tiny random-weight WanModel. Run by tests/test_wan_upstream.py in a subprocess (the real
``generate``/``wan`` modules would clash with the stand-in's in one process):

    python tests/upstream/wan21_checks.py /path/to/Wan2.1 CHECK

The real code runs unchanged except for CPU shims: ``torch.cuda.current_device`` while
importing (wan/modules/t5.py evaluates it as a default argument) and
``wan.modules.model.flash_attention`` rebound to PyTorch SDPA. Pipelines are the real
classes built without their checkpoint-loading ``__init__``; the text encoder, VAE and
CLIP are small stand-ins, the DiT, solvers, sampling loops and savers are Wan2.1's.
"""

import json
import os
import sys
import types

import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, SIZE, FRAMES = 10, (64, 64), 5



def an_image() -> str:
    """A small PNG for --image (the script opens it to check it is an image)."""
    import tempfile
    from PIL import Image
    path = os.path.join(tempfile.mkdtemp(), "input.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path

def sdpa_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0., softmax_scale=None, q_scale=None,
                   causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """flash_attention's contract ([B, L, N, D] in and out, keys past k_lens ignored) on SDPA."""
    mask = None
    if k_lens is not None:
        mask = torch.arange(k.shape[1])[None, None, None, :] < k_lens.to(q.device)[:, None, None, None]
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), attn_mask=mask)
    return out.transpose(1, 2).to(q.dtype)


def import_upstream(wan_dir):
    sys.path.insert(0, wan_dir)
    real_current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        import generate
    finally:
        torch.cuda.current_device = real_current_device
    import wan.modules.model
    wan.modules.model.flash_attention = sdpa_attention
    return generate


def load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location("easycache_generate", os.path.join(ROOT, "wan2_1", "easycache_generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TextEncoder:
    model = torch.nn.Identity()

    def __call__(self, texts, device):
        return [torch.randn(12, 16, generator=torch.Generator().manual_seed(len(t))).to(device) for t in texts]


class VAE:
    model = types.SimpleNamespace(z_dim=16)

    def decode(self, zs):
        return [z.clone() for z in zs]  # the latents themselves, so tests compare trajectories

    def encode(self, videos):
        return [torch.nn.functional.avg_pool3d(v[None].float(), (1, 8, 8))[0].repeat(6, 1, 1, 1)[:16, ::4]
                for v in videos]


class CLIP:
    model = torch.nn.Identity()

    def visual(self, images):
        return torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(0)) * images[0].mean()


def tiny_pipeline(gen, cls_name="WanT2V", task="t2v-1.3B", **_constructor_kwargs):
    """A real Wan2.1 pipeline object with the attributes its __init__ sets, tiny parts."""
    from wan.image2video import WanI2V
    from wan.modules.model import WanModel
    from wan.text2video import WanT2V
    cfg = gen.WAN_CONFIGS[task]
    pipe = object.__new__({"WanT2V": WanT2V, "WanI2V": WanI2V}[cls_name])
    pipe.device, pipe.config, pipe.rank, pipe.t5_cpu, pipe.use_usp = torch.device("cpu"), cfg, 0, False, False
    pipe.num_train_timesteps, pipe.param_dtype = cfg.num_train_timesteps, cfg.param_dtype
    pipe.vae_stride, pipe.patch_size, pipe.sp_size = cfg.vae_stride, cfg.patch_size, 1
    pipe.text_encoder, pipe.vae, pipe.clip = TextEncoder(), VAE(), CLIP()
    model_type = "i2v" if cls_name == "WanI2V" else "t2v"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe.model = WanModel(model_type=model_type, text_len=16, in_dim=36 if model_type == "i2v" else 16, dim=32,
                              ffn_dim=64, freq_dim=32, text_dim=16, out_dim=16, num_heads=2, num_layers=2)
        with torch.no_grad():  # Wan2.1 zero-initialises the head: random weights everywhere instead
            for p in pipe.model.parameters():
                p.normal_(0, 0.2)
    pipe.model.eval().requires_grad_(False)
    pipe.sample_neg_prompt = cfg.sample_neg_prompt
    return pipe


def counted(pipe):
    calls = []
    inner = pipe.model.forward
    pipe.model.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    return calls


def t2v(pipe, solver):
    return pipe.generate("a red ball", size=SIZE, frame_num=FRAMES, sample_solver=solver, sampling_steps=STEPS,
                         seed=0, offload_model=False)


def check_parser_spec(gen, script):
    parser = script.upstream_parser(gen)
    spec = {a.dest: [repr(a.default), list(a.choices) if a.choices else None] for a in parser._actions}
    print(json.dumps(spec))


def check_parse_args(gen, script):
    ckpt = os.path.join(ROOT, "tests")
    args = script.parse_args(gen, ["--task", "i2v-14B", "--size", "832*480", "--ckpt_dir", ckpt,
                                   "--image", an_image()])
    assert (args.sample_steps, args.sample_shift, args.frame_num) == (40, 3.0, 81), args
    assert (args.cache, args.thresh, args.ret_steps) == ("easycache", 0.05, 10)
    for argv, expected in ((["--task", "t2v-1.3B", "--size", "1280*720"], "Unsupport size 1280*720"),
                           (["--task", "flf2v-14B"], "needs both --first_frame and --last_frame"),
                           (["--task", "t2v-1.3B", "--size", "832*480", "--ret_steps", "50"], "must be smaller")):
        try:
            script.parse_args(gen, argv + ["--ckpt_dir", ckpt])
        except SystemExit as exit_:
            assert exit_.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
    print("parse_args ok", expected)


def check_t2v(gen, script):
    for solver in ("unipc", "dpm++"):
        baseline = t2v(tiny_pipeline(gen), solver)
        for kwargs in (dict(threshold=0.0, warmup_steps=0), dict(enabled=False)):
            pipe = tiny_pipeline(gen)
            cache = script.enable_easycache(pipe, **kwargs)
            assert torch.equal(t2v(pipe, solver), baseline), (solver, kwargs)
            assert cache.report()["dit_calls_computed"] == 2 * STEPS
        pipe = tiny_pipeline(gen)
        calls = counted(pipe)
        cache = script.enable_easycache(pipe, threshold=2.0, warmup_steps=3)
        cached = t2v(pipe, solver)
        report = cache.report()
        assert report["dit_calls_total"] == 2 * STEPS, report["dit_calls_total"]
        assert len(calls) == report["dit_calls_computed"] < 2 * STEPS, (len(calls), report["dit_calls_computed"])
        assert torch.isfinite(cached).all()
        print(solver, f"computed {len(calls)}/{2 * STEPS}",
              f"rel. L1 to baseline {((cached - baseline).abs().mean() / baseline.abs().mean()).item():.4f}")


def check_teacache(gen, script):
    """TeaCache's block-stack hook inside the real WanModel.forward, both indicator variants."""
    identity = [1.0, 0.0]
    baseline = t2v(tiny_pipeline(gen), "unipc")
    pipe = tiny_pipeline(gen)
    cache = script.enable_teacache(pipe, 0.0, identity)
    assert torch.equal(t2v(pipe, "unipc"), baseline)
    for use_ret_steps in (False, True):
        pipe = tiny_pipeline(gen)
        runs = []
        pipe.model.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
        cache = script.enable_teacache(pipe, 3.0, identity, use_ret_steps=use_ret_steps)
        t2v(pipe, "unipc")
        report = cache.report()
        assert len(runs) == report["dit_calls_computed"] < report["dit_calls_total"] == 2 * STEPS, \
            (len(runs), report["dit_calls_computed"])
        print("teacache", "ret" if use_ret_steps else "e", f"computed {len(runs)}/{2 * STEPS}")


def check_deltacache(gen, script):
    """The delta cache's segments inside the real WanModel.forward."""
    baseline = t2v(tiny_pipeline(gen), "unipc")
    pipe = tiny_pipeline(gen)
    script.enable_deltacache(pipe, foreground=(1,), warmup_steps=STEPS, interval=1)
    assert torch.equal(t2v(pipe, "unipc"), baseline)
    pipe = tiny_pipeline(gen)
    runs = {0: 0, 1: 0}
    for i in (0, 1):
        pipe.model.blocks[i].register_forward_pre_hook(lambda m, a, i=i: runs.__setitem__(i, runs[i] + 1))
    cache = script.enable_deltacache(pipe, foreground=(1,), warmup_steps=3, interval=4)
    t2v(pipe, "unipc")
    report = cache.report()
    full_steps = [0, 1, 2, 4, 8]
    assert runs == {0: 2 * len(full_steps), 1: 2 * STEPS}, runs
    assert report["blocks_run"] == sum(runs.values())
    print("deltacache blocks run", report["blocks_run"], "of", report["blocks_total"])


def check_magcache(gen, script):
    """Calibration then MagCache inside the real WanModel.forward."""
    calibration = None
    for seed in (1, 2):
        pipe = tiny_pipeline(gen)
        recorder = script.calibrate_pipeline(pipe)
        pipe.generate("a red ball", size=SIZE, frame_num=FRAMES, sampling_steps=STEPS, seed=seed, offload_model=False)
        assert recorder.report()["dit_calls_computed"] == 2 * STEPS
        calibration = script.merge_calibration(calibration, recorder.policies[None])
    assert len(calibration["magcache_ratios"]) == 2 * STEPS and calibration["teacache_coefficients"]
    baseline = t2v(tiny_pipeline(gen), "unipc")
    pipe = tiny_pipeline(gen)
    script.enable_magcache(pipe, calibration["magcache_ratios"], threshold=0.0)
    assert torch.equal(t2v(pipe, "unipc"), baseline)
    pipe = tiny_pipeline(gen)
    runs = []
    pipe.model.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
    cache = script.enable_magcache(pipe, calibration["magcache_ratios"], threshold=1.0, max_skips=3)
    t2v(pipe, "unipc")
    report = cache.report()
    assert len(runs) == report["dit_calls_computed"] < 2 * STEPS, (len(runs), report["dit_calls_computed"])
    print("magcache computed", len(runs), "of", 2 * STEPS)


def check_registry(gen, script):
    """Every policy the script's registry holds, inside the real pipeline, DiT and solvers: at
    its exact settings bitwise the baseline; at its eager settings fewer calls (whole-model) or
    block-stack runs (block-level) reach the DiT, as reported."""
    for solver in ("unipc", "dpm++"):
        baseline = t2v(tiny_pipeline(gen), solver)
        for name, spec in sorted(script.REGISTRY.items()):
            needs = {"coefficients": [1.0, 0.0], "ratios": [1.0, 1.0] + [0.95, 0.95] * (STEPS - 1)}
            given = {k: v for k, v in needs.items() if k in {f.setting for f in spec.flags}}
            pipe = tiny_pipeline(gen)
            script.enable_cache(pipe, name, **given, **spec.exact)
            assert torch.equal(t2v(pipe, solver), baseline), (name, solver)
            pipe = tiny_pipeline(gen)
            calls, runs = counted(pipe), []
            pipe.model.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
            cache = script.enable_cache(pipe, name, **given, **spec.eager)
            latents = t2v(pipe, solver)
            report = cache.report()
            assert torch.isfinite(latents).all() and report["dit_calls_computed"] < 2 * STEPS, (name, solver)
            if spec.make.level == "model":
                assert len(calls) == report["dit_calls_computed"], name
            else:
                assert len(runs) * 2 == report["blocks_run"] < report["blocks_total"], name
            print(f"registry {name} {solver} computed {report['dit_calls_computed']}/{2 * STEPS}")


def check_i2v(gen, script):
    from PIL import Image
    pipe = tiny_pipeline(gen, "WanI2V", "i2v-14B")
    calls = counted(pipe)
    cache = script.enable_easycache(pipe, threshold=2.0, warmup_steps=3)
    img = Image.new("RGB", (80, 64), (200, 40, 40))
    pipe.generate("a cat", img, max_area=64 * 64, frame_num=FRAMES, sampling_steps=STEPS, seed=0, offload_model=False)
    report = cache.report()
    assert report["dit_calls_total"] == 2 * STEPS
    assert len(calls) == report["dit_calls_computed"] < 2 * STEPS
    print("i2v", f"computed {len(calls)}/{2 * STEPS}")


def check_cli_run(gen, script, out_dir):
    """generate.py's real generate(args) and cache_video, the pipeline swapped for a tiny one."""
    video = os.path.join(out_dir, "real.mp4")
    args = script.parse_args(gen, ["--task", "t2v-1.3B", "--size", "832*480", "--ckpt_dir", out_dir,
                                   "--frame_num", "5", "--sample_steps", str(STEPS), "--base_seed", "0",
                                   "--thresh", "2.0", "--ret_steps", "3", "--offload_model", "False",
                                   "--save_file", video])

    def build(**kwargs):
        pipe = tiny_pipeline(gen, **kwargs)
        pipe.vae.decode = lambda zs: [torch.tanh(z[:3]) for z in zs]  # RGB for the real saver
        return pipe
    gen.wan.WanT2V = build
    gen.SIZE_CONFIGS = dict(gen.SIZE_CONFIGS, **{"832*480": SIZE})
    report = script.run(gen, args)
    assert report["dit_calls_computed"] < report["dit_calls_total"] == 2 * STEPS
    assert os.path.getsize(video) > 0
    assert sorted(os.listdir(out_dir)) == ["real.mp4", "real.report.json"], os.listdir(out_dir)
    print("cli ok")


if __name__ == "__main__":
    wan_dir, check = sys.argv[1], sys.argv[2]
    gen = import_upstream(wan_dir)
    script = load_script()
    if check == "cli_run":
        check_cli_run(gen, script, sys.argv[3])
    else:
        globals()[f"check_{check}"](gen, script)
