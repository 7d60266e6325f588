"""Checks of wan2_2/easycache_generate.py against a real Wan2.2 checkout, on a CPU, with tiny
random-weight WanModels. Run by tests/upstream/test_wan22_upstream.py in a subprocess (the real
``generate``/``wan`` modules would clash with the stand-ins' in one process):

    python tests/upstream/wan22_checks.py /path/to/Wan2.2 CHECK [ARG]

The real code runs unchanged except for CPU shims, applied here before ``wan`` is imported:
stub modules for what only s2v/animate import and this interpreter lacks (decord, librosa,
peft, ...); ``torch.cuda.current_device`` while importing (wan/modules/t5.py evaluates it as a
default argument); ``flash_attention`` rebound, in every wan module that imported it by name,
to PyTorch SDPA with its contract; ``torch.cuda.synchronize`` a no-op (the offload paths and
generate.py call it). ``torch.amp.autocast('cuda', ...)`` needs nothing: without CUDA, torch
disables it with a warning and the loops run in fp32.

Pipelines are the real classes (WanT2V, WanI2V with two experts; WanTI2V) built without their
checkpoint-loading ``__init__``, with the attributes it sets and the models passed through the
real ``_configure_model``; the text encoder and the VAEs are small stand-ins. The DiT, the
schedulers (unipc, dpm++), the sampling loops, ``_prepare_model_for_timestep``, TI2V's
per-token timesteps, generate.py's ``generate(args)`` and ``save_video`` are Wan2.2's. The
tiny DiTs' weights are random (std 0.2), their time embedding's smaller (std 0.05), so that
their output changes with the timestep about as smoothly as a trained model's. For the command
line runs, ``wan.WanT2V``/``wan.WanTI2V`` become subclasses of the real classes whose
constructor returns the tiny pipeline, and the sizes generate.py looks up map to tiny ones.
"""

import contextlib
import importlib.machinery
import importlib.util
import io
import json
import os
import sys
import types
import warnings

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*CUDA is not available.*")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, FRAMES = 10, 5
SIZE = (64, 64)  # (width, height): A14B latents 8 x 8, 16 tokens a frame
TI2V_SIZE = (128, 128)  # TI2V: VAE stride 16, latents 8 x 8
MANY_STEPS = 40  # the default warm-ups (7 and 2) leave steps to skip only at the official step counts
TASKS = {"t2v": ("WanT2V", "t2v-A14B"), "i2v": ("WanI2V", "i2v-A14B"), "ti2v": ("WanTI2V", "ti2v-5B")}
OPTIONAL_MODULES = ("decord", "librosa", "peft", "dashscope")  # imported by s2v, animate, prompt extension


# --- shims -------------------------------------------------------------------------------------

class StubModule(types.ModuleType):
    """A module that is not installed and not needed on these paths: every attribute is a class."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *args, **kwargs: None})



def an_image() -> str:
    """A small PNG for --image (the script opens it to check it is an image)."""
    import tempfile
    from PIL import Image
    path = os.path.join(tempfile.mkdtemp(), "input.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path

def stub_missing_modules(names=OPTIONAL_MODULES):
    stubbed = []
    for name in names:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            module = StubModule(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec(name) must not raise
            sys.modules[name] = module
            stubbed.append(name)
    return stubbed


def sdpa_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0., softmax_scale=None, q_scale=None,
                   causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
    """flash_attention's contract ([B, L, N, D] in and out, keys past k_lens ignored) on SDPA."""
    if q_scale is not None:
        q = q * q_scale
    mask = None
    if k_lens is not None:
        mask = torch.arange(k.shape[1])[None, None, None, :] < k_lens.to(q.device)[:, None, None, None]
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), attn_mask=mask,
        scale=softmax_scale)
    return out.transpose(1, 2).to(q.dtype)


def import_upstream(wan_dir):
    """The checkout's generate.py (and wan) imported with the CPU shims in place."""
    stub_missing_modules()
    sys.path.insert(0, wan_dir)
    real_current_device = torch.cuda.current_device
    torch.cuda.current_device = lambda: 0
    try:
        import generate
    finally:
        torch.cuda.current_device = real_current_device
    torch.cuda.synchronize = lambda device=None: None
    attention = sys.modules.get("wan.modules.attention")
    if attention is not None:
        for name, module in list(sys.modules.items()):
            if (name == "wan" or name.startswith("wan.")) and getattr(module, "flash_attention", None) is \
                    attention.flash_attention and module is not attention:
                module.flash_attention = sdpa_attention
    return generate


def load_script():
    """The script imported as a user's ``from easycache_generate import ...`` imports it."""
    spec = importlib.util.spec_from_file_location("easycache_generate",
                                                  os.path.join(ROOT, "wan2_2", "easycache_generate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["easycache_generate"] = module
    spec.loader.exec_module(module)
    return module


# --- tiny parts ----------------------------------------------------------------------------------

class TextEncoder:
    """T5EncoderModel's interface: ``(texts, device) -> [L, text_dim]`` per text; ``.model`` moves."""

    def __init__(self):
        self.model = torch.nn.Identity()

    def __call__(self, texts, device):
        return [torch.randn(12, 16, generator=torch.Generator().manual_seed(len(t))).to(device) for t in texts]


class VAE21:
    """Wan2_1_VAE's interface (16 latent channels, stride (4, 8, 8)); decode returns the latents
    themselves, so the checks compare trajectories."""

    def __init__(self):
        self.model = types.SimpleNamespace(z_dim=16)
        self.decoded = []

    def decode(self, zs):
        self.decoded.append([z.clone() for z in zs])
        return [z.clone() for z in zs]

    def encode(self, videos):
        return [torch.nn.functional.avg_pool3d(v[None].float(), (1, 8, 8))[0].repeat(6, 1, 1, 1)[:16, ::4]
                for v in videos]


class VAE22(VAE21):
    """Wan2_2_VAE's interface (48 latent channels, stride (4, 16, 16))."""

    def __init__(self):
        super().__init__()
        self.model = types.SimpleNamespace(z_dim=48)

    def encode(self, videos):
        return [torch.nn.functional.avg_pool3d(v[None].float(), (1, 16, 16))[0].repeat(16, 1, 1, 1)[:48, ::4]
                for v in videos]


def tiny_model(model_type, in_dim, out_dim, seed):
    from wan.modules.model import WanModel
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WanModel(model_type=model_type, text_len=16, in_dim=in_dim, dim=32, ffn_dim=64, freq_dim=32,
                         text_dim=16, out_dim=out_dim, num_heads=2, num_layers=2)
        with torch.no_grad():  # the head is zero-initialised: random weights everywhere instead
            for name, p in model.named_parameters():
                # the time embedding's smaller: the output then varies with t as smoothly as a trained
                # model's, instead of jumping between neighbouring timesteps (which no threshold skips)
                p.normal_(0, 0.05 if name.startswith("time_") else 0.2)
    return model


def tiny_pipeline(gen, cls_name="WanT2V", task=None, **_constructor_kwargs):
    """A real Wan2.2 pipeline object with the attributes its __init__ sets, tiny parts."""
    from wan.image2video import WanI2V
    from wan.text2video import WanT2V
    from wan.textimage2video import WanTI2V
    task = task or {c: t for c, t in TASKS.values()}[cls_name]
    cfg = gen.WAN_CONFIGS[task]
    pipe = object.__new__({"WanT2V": WanT2V, "WanI2V": WanI2V, "WanTI2V": WanTI2V}[cls_name])
    pipe.device, pipe.config, pipe.rank, pipe.t5_cpu, pipe.init_on_cpu = torch.device("cpu"), cfg, 0, False, True
    pipe.num_train_timesteps, pipe.param_dtype = cfg.num_train_timesteps, cfg.param_dtype
    pipe.vae_stride, pipe.patch_size, pipe.sp_size = cfg.vae_stride, cfg.patch_size, 1
    pipe.text_encoder = TextEncoder()
    pipe.sample_neg_prompt = cfg.sample_neg_prompt
    configure = dict(use_sp=False, dit_fsdp=False, shard_fn=None, convert_model_dtype=False)
    if cls_name == "WanTI2V":
        pipe.vae = VAE22()
        pipe.model = pipe._configure_model(model=tiny_model("ti2v", 48, 48, seed=0), **configure)
    else:
        pipe.boundary = cfg.boundary
        pipe.vae = VAE21()
        model_type, in_dim = ("i2v", 36) if cls_name == "WanI2V" else ("t2v", 16)
        pipe.low_noise_model = pipe._configure_model(model=tiny_model(model_type, in_dim, 16, seed=1), **configure)
        pipe.high_noise_model = pipe._configure_model(model=tiny_model(model_type, in_dim, 16, seed=2), **configure)
    return pipe


def image():
    from PIL import Image
    img = Image.new("RGB", (80, 64), (200, 40, 40))
    img.paste((20, 160, 90), (10, 10, 50, 40))
    return img


def sample(pipe, solver="unipc", steps=STEPS, seed=0, with_image=False):
    """One video through the pipeline's real generate(); the final latents (the stub VAE decodes
    to them)."""
    common = dict(frame_num=FRAMES, sample_solver=solver, sampling_steps=steps, seed=seed, offload_model=False)
    name = type(pipe).__name__
    if name == "WanT2V":
        return pipe.generate("a red ball", size=SIZE, shift=12.0, **common)
    if name == "WanI2V":
        return pipe.generate("a cat", image(), max_area=SIZE[0] * SIZE[1], shift=5.0, **common)
    return pipe.generate("a red ball", img=image() if with_image else None, size=TI2V_SIZE,
                         max_area=TI2V_SIZE[0] * TI2V_SIZE[1], shift=5.0, **common)


def experts(pipe):
    if hasattr(pipe, "high_noise_model"):
        return {"high": pipe.high_noise_model, "low": pipe.low_noise_model}
    return {None: pipe.model}


def counted(pipe):
    """The calls reaching each DiT instance, in order: its forward wrapped before the cache."""
    calls = []
    for name, model in experts(pipe).items():
        inner = model.forward
        model.forward = lambda *a, _name=name, _inner=inner, **k: calls.append(_name) or _inner(*a, **k)
    return calls


def block_runs(pipe):
    """The block-stack runs of each DiT instance (its first block's calls)."""
    runs = {name: 0 for name in experts(pipe)}
    for name, model in experts(pipe).items():
        model.blocks[0].register_forward_pre_hook(lambda m, a, _name=name: runs.__setitem__(_name, runs[_name] + 1))
    return runs


def split_of(gen, script, task, steps, solver):
    """expert_steps with the schedulers of the real pipeline class's module."""
    from wan.image2video import WanI2V
    from wan.text2video import WanT2V
    cfg = gen.WAN_CONFIGS[task]
    cls = WanT2V if task == "t2v-A14B" else WanI2V
    solvers = script.solvers_of(cls)
    return script.expert_steps(solvers, cfg.boundary, cfg.num_train_timesteps, steps, cfg.sample_shift, solver)


def tiny_class(gen, cls_name):
    """A stand-in for ``wan.<cls_name>`` that generate.py constructs as the real class: the real
    class's methods (the script finds the checkout's schedulers through them), a tiny pipeline
    built instead of the checkpoint-loading __init__, its VAE decoding to RGB for the real saver."""
    from wan.text2video import WanT2V
    from wan.textimage2video import WanTI2V
    real = {"WanT2V": WanT2V, "WanTI2V": WanTI2V}[cls_name]

    def build(cls, config, checkpoint_dir, **kwargs):
        assert os.path.isdir(checkpoint_dir) and kwargs["rank"] == 0, kwargs
        pipe = tiny_pipeline(gen, cls_name)  # an instance of the real class: __init__ is not called
        pipe.config = config
        pipe.vae.decode = lambda zs: [torch.tanh(z[:3]) for z in zs]
        cls.built.append(pipe)
        return pipe
    return type(cls_name, (real,), {"__new__": build, "__module__": real.__module__, "built": []})


# --- checks ----------------------------------------------------------------------------------------

def check_parser_spec(gen, script):
    parser = script.upstream_parser(gen)
    spec = {a.dest: [repr(a.default), list(a.choices) if a.choices else None] for a in parser._actions}
    print(json.dumps(spec))


def expect_exit(script, gen, argv, message):
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            script.parse_args(gen, argv)
    except SystemExit as exit_:
        lines = stderr.getvalue().strip().splitlines()
        assert exit_.code == 2, (argv, exit_.code, stderr.getvalue())
        assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], (argv, stderr.getvalue())
        return lines[0]
    raise AssertionError(f"{argv} was accepted")


def check_parse_args(gen, script):
    ckpt = os.path.join(ROOT, "tests")
    args = script.parse_args(gen, ["--task", "t2v-A14B", "--ckpt_dir", ckpt])
    assert (args.sample_steps, args.sample_shift, args.frame_num, args.size) == (40, 12.0, 81, "1280*720"), args
    assert args.cache == "easycache" and args.cache_plan.spec.name == "easycache", args.cache
    plan = args.cache_plan.parts
    assert set(plan) == {"high", "low"}, plan
    assert plan["high"] == {"threshold": 0.06, "warmup_steps": 7}, plan
    assert plan["low"] == {"threshold": 0.06, "warmup_steps": 2}, plan
    args = script.parse_args(gen, ["--task", "i2v-A14B", "--size", "832*480", "--ckpt_dir", ckpt,
                                   "--image", an_image(), "--thresh_low", "0.03"])
    assert (args.sample_steps, args.sample_shift) == (40, 5.0), args
    assert args.cache_plan.parts == {"high": {"threshold": 0.05, "warmup_steps": 7},
                                  "low": {"threshold": 0.03, "warmup_steps": 2}}, args.cache_plan.parts
    args = script.parse_args(gen, ["--task", "ti2v-5B", "--size", "1280*704", "--ckpt_dir", ckpt])
    assert (args.sample_steps, args.sample_shift, args.frame_num) == (50, 5.0, 121), args
    assert args.cache_plan.parts == {None: {"threshold": 0.05, "warmup_steps": 7}}, args.cache_plan.parts
    errors = [
        (["--task", "s2v-14B", "--size", "1280*720"], "not supported"),
        (["--task", "t2v-A14B", "--thresh_low", "-1"], "--thresh_low"),
        (["--task", "t2v-A14B", "--ret_steps", "30"], "26"),  # the high-noise expert serves 26 of the 40 steps
        (["--task", "ti2v-5B", "--size", "1280*704", "--thresh_high", "0.1"], "--thresh_high"),
        (["--task", "ti2v-5B", "--size", "1280*720"], "Unsupport size 1280*720"),
    ]
    for argv, message in errors:
        print("exit 2:", expect_exit(script, gen, argv + ["--ckpt_dir", ckpt], message))
    print("parse_args ok")


def check_split(gen, script):
    """Each expert's steps from Wan2.2's own schedulers, and the calls a real run sends each."""
    expected = {"t2v-A14B": {10: (7, 3), 20: (13, 7), 40: (26, 14), 50: (32, 18)},
                "i2v-A14B": {10: (4, 6), 20: (8, 12), 40: (15, 25), 50: (18, 32)}}
    for task, by_steps in expected.items():
        for solver in ("unipc", "dpm++"):
            for steps, (high, low) in by_steps.items():
                split = split_of(gen, script, task, steps, solver)
                assert split == {"high": high, "low": low}, (task, solver, steps, split)
    for short, (cls_name, task) in (("t2v", TASKS["t2v"]), ("i2v", TASKS["i2v"])):
        for solver in ("unipc", "dpm++"):
            steps = expected[task][STEPS]
            pipe = tiny_pipeline(gen, cls_name)
            calls = counted(pipe)
            cache = script.enable_easycache(pipe, threshold=0.0, warmup_steps=0, warmup_steps_low=0)
            sample(pipe, solver)
            assert calls == ["high"] * 2 * steps[0] + ["low"] * 2 * steps[1], (task, solver, calls)
            modules = cache.report()["modules"]
            assert (modules["high"]["first_step"], modules["high"]["last_step"]) == (0, steps[0] - 1), modules
            assert (modules["low"]["first_step"], modules["low"]["last_step"]) == (steps[0], STEPS - 1), modules
            print(f"split {task} {solver} high {steps[0]} low {steps[1]} steps; calls in order")
    print("split ok")


def cached_run(gen, script, short, solver, steps, with_image=False, **settings):
    """One video with EasyCache on a fresh tiny pipeline: the calls reaching each DiT, the report,
    the final latents."""
    cls_name, task = TASKS[short]
    pipe = tiny_pipeline(gen, cls_name)
    calls = counted(pipe)
    cache = script.enable_easycache(pipe, **settings)
    latents = sample(pipe, solver, steps, with_image=with_image)
    return pipe, calls, cache.report(), latents


def check_pipeline(gen, script, short, with_image=False):
    """Exactness (threshold 0, no warm-up; and disabled), then a large threshold with the default
    warm-ups: fewer calls reach each expert, as reported, each expert's last step computed and
    the low expert's first."""
    cls_name, task = TASKS[short]
    two = cls_name != "WanTI2V"
    label = short + (" image" if with_image else "")
    for solver in ("unipc", "dpm++"):
        baseline = sample(tiny_pipeline(gen, cls_name), solver, with_image=with_image)
        exact = dict(threshold=0.0, warmup_steps=0, **(dict(warmup_steps_low=0) if two else {}))
        for kwargs in (exact, dict(enabled=False)):
            pipe, calls, report, latents = cached_run(gen, script, short, solver, STEPS, with_image, **kwargs)
            assert torch.equal(latents, baseline), (label, solver, kwargs)
            assert len(calls) == report["dit_calls_computed"] == report["dit_calls_total"] == 2 * STEPS, \
                (label, solver, kwargs, len(calls), report["dit_calls_computed"])
        steps = MANY_STEPS if two else 20
        pipe, calls, report, latents = cached_run(gen, script, short, solver, steps, with_image, threshold=2.0)
        assert torch.isfinite(latents).all()
        assert report["dit_calls_total"] == 2 * steps, report["dit_calls_total"]
        rows = report["calls"]
        if two:
            split = split_of(gen, script, task, steps, solver)
            modules = report["modules"]
            parts = []
            for name in ("high", "low"):
                reached = calls.count(name)
                assert modules[name]["dit_calls_total"] == 2 * split[name], (name, modules[name], split)
                assert reached == modules[name]["dit_calls_computed"] < 2 * split[name], \
                    (label, solver, name, reached, modules[name])
                mine = [r for r in rows if r["module"] == name]
                assert mine[-1]["computed"], (name, "last step not computed")
                parts.append(f"{name} computed {reached}/{2 * split[name]}")
            low = [r for r in rows if r["module"] == "low"]
            assert low[0]["computed"] and low[0]["step"] == split["high"], low[0]
            assert all(r["computed"] for r in rows if r["module"] == "high" and r["step"] < 7)
            assert all(r["computed"] for r in low if r["step"] < split["high"] + 2)
            print(f"{label} {solver} {steps} steps", " ".join(parts))
        else:
            assert len(calls) == report["dit_calls_computed"] < 2 * steps, (len(calls), report["dit_calls_computed"])
            assert rows[-1]["computed"] and all(r["computed"] for r in rows if r["step"] < 7)
            print(f"{label} {solver} {steps} steps computed {len(calls)}/{2 * steps}")
        # disable(): the pipeline's own generate and DiT forwards back, the next video uncached
        pipe = tiny_pipeline(gen, cls_name)
        low = dict(warmup_steps_low=1) if two else {}
        cache = script.enable_easycache(pipe, threshold=2.0, warmup_steps=1, **low)
        assert not torch.equal(sample(pipe, solver, with_image=with_image), baseline), (label, solver)
        cache.disable()
        assert "generate" not in vars(pipe) and not any("forward" in vars(m) for m in experts(pipe).values())
        assert torch.equal(sample(pipe, solver, with_image=with_image), baseline), (label, solver, "disabled")


def check_t2v(gen, script):
    check_pipeline(gen, script, "t2v")


def check_i2v(gen, script):
    check_pipeline(gen, script, "i2v")


def check_ti2v(gen, script):
    check_pipeline(gen, script, "ti2v")
    check_pipeline(gen, script, "ti2v", with_image=True)


def check_defaults(gen, script):
    """The default settings (tau per task, warm-ups 7 and 2) at the official step counts: the
    calls reaching each expert are the report's, the warm-ups, the low expert's first step and
    each expert's last are computed."""
    for short, steps in (("t2v", 40), ("i2v", 40), ("ti2v", 50)):
        pipe, calls, report, latents = cached_run(gen, script, short, "unipc", steps)
        assert torch.isfinite(latents).all() and report["dit_calls_total"] == 2 * steps
        rows, modules = report["calls"], report.get("modules", {None: report})
        parts = []
        for name, module in modules.items():
            mine = [r for r in rows if r.get("module") == name]
            first = mine[0]["step"]
            warmup = 2 if name == "low" else 7
            assert calls.count(name) == module["dit_calls_computed"], (short, name, calls.count(name), module)
            assert all(r["computed"] for r in mine if r["step"] < first + warmup or r["step"] == mine[-1]["step"]), \
                (short, name, [r for r in mine if not r["computed"]][:2])
            if name is not None:
                parts.append(f"{name} computed {module['dit_calls_computed']}/{module['dit_calls_total']}")
        print(f"defaults {short} {steps} steps thresh {script.default_threshold(pipe)} computed "
              f"{report['dit_calls_computed']}/{report['dit_calls_total']}", *parts)


def check_registry(gen, script):
    """Every registered policy inside the real t2v-A14B loop, one policy per expert: at its exact
    settings bitwise the baseline; at its eager settings fewer calls (whole-model) or block-stack
    runs (block-level) reach the experts, as reported."""
    for solver in ("unipc", "dpm++"):
        baseline = sample(tiny_pipeline(gen), solver)
        for name, spec in sorted(script.REGISTRY.items()):
            needs = {"coefficients": [1.0, 0.0], "ratios": [1.0, 1.0] + [0.95, 0.95] * (STEPS - 1)}
            given = {k: v for k, v in needs.items() if k in {f.setting for f in spec.flags}}
            pipe = tiny_pipeline(gen)
            cache = script.enable_cache(pipe, name, **given, **spec.exact)
            assert torch.equal(sample(pipe, solver), baseline), (name, solver)
            assert set(cache.policies) == {"high", "low"} and cache.policies["high"] is not cache.policies["low"]
            pipe = tiny_pipeline(gen)
            calls, runs = counted(pipe), block_runs(pipe)
            cache = script.enable_cache(pipe, name, **given, **spec.eager)
            latents = sample(pipe, solver)
            report = cache.report()
            assert torch.isfinite(latents).all() and report["dit_calls_total"] == 2 * STEPS, (name, solver)
            modules = report["modules"]
            if spec.make.level == "model":
                assert report["dit_calls_computed"] < 2 * STEPS, (name, solver, report["dit_calls_computed"])
                for expert in ("high", "low"):
                    assert calls.count(expert) == modules[expert]["dit_calls_computed"], (name, expert)
                done = f"computed {report['dit_calls_computed']}/{2 * STEPS}"
            else:
                assert len(calls) == 2 * STEPS  # the embeddings and the head always run
                assert 2 * sum(runs.values()) == report["blocks_run"] < report["blocks_total"], \
                    (name, solver, runs, report["blocks_run"], report["blocks_total"])
                for expert in ("high", "low"):
                    assert 2 * runs[expert] == modules[expert]["blocks_run"], (name, expert, runs, modules)
                done = f"blocks run {report['blocks_run']}/{report['blocks_total']}"
            print(f"registry {name} {solver} {done}")


def check_calibrate(gen, script):
    """Calibration per expert over two videos, then MagCache per expert from it."""
    calibration = {"high": None, "low": None}
    for seed in (1, 2):
        pipe = tiny_pipeline(gen)
        recorder = script.calibrate_pipeline(pipe)
        sample(pipe, seed=seed)
        assert recorder.report()["dit_calls_computed"] == 2 * STEPS
        assert set(recorder.policies) == {"high", "low"}
        for expert in calibration:
            calibration[expert] = script.merge_calibration(calibration[expert], recorder.policies[expert])
    split = split_of(gen, script, "t2v-A14B", STEPS, "unipc")
    for expert, merged in calibration.items():
        assert merged["videos"] == 2, merged
        assert len(merged["magcache_ratios"]) == 2 * split[expert], (expert, len(merged["magcache_ratios"]))
    baseline = sample(tiny_pipeline(gen))
    pipe = tiny_pipeline(gen)
    script.enable_cache(pipe, {e: script.MagCachePolicy(c["magcache_ratios"], threshold=0.0)
                               for e, c in calibration.items()})
    assert torch.equal(sample(pipe), baseline)
    pipe = tiny_pipeline(gen)
    runs = block_runs(pipe)
    cache = script.enable_cache(pipe, {e: script.MagCachePolicy(c["magcache_ratios"], threshold=1.0, max_skips=3)
                                       for e, c in calibration.items()})
    sample(pipe)
    report = cache.report()
    assert 2 * sum(runs.values()) == report["blocks_run"] < report["blocks_total"], (runs, report["blocks_run"])
    print("calibrate magcache blocks run", report["blocks_run"], "of", report["blocks_total"],
          {e: m["blocks_run"] for e, m in report["modules"].items()})


def check_cli_run(gen, script, out_dir):
    """generate.py's real generate(args) and save_video for t2v-A14B and ti2v-5B, the pipeline
    classes building tiny pipelines and the sizes mapped to tiny ones."""
    gen.wan.WanT2V, gen.wan.WanTI2V = tiny_class(gen, "WanT2V"), tiny_class(gen, "WanTI2V")
    gen.SIZE_CONFIGS = dict(gen.SIZE_CONFIGS, **{"832*480": SIZE, "1280*704": TI2V_SIZE})
    gen.MAX_AREA_CONFIGS = dict(gen.MAX_AREA_CONFIGS, **{"832*480": SIZE[0] * SIZE[1],
                                                         "1280*704": TI2V_SIZE[0] * TI2V_SIZE[1]})
    for task, size, name in (("t2v-A14B", "832*480", "t2v"), ("ti2v-5B", "1280*704", "ti2v")):
        folder = os.path.join(out_dir, name)
        os.makedirs(folder)
        video = os.path.join(folder, f"{name}.mp4")
        args = script.parse_args(gen, ["--task", task, "--size", size, "--ckpt_dir", out_dir, "--frame_num",
                                       str(FRAMES), "--sample_steps", str(STEPS), "--base_seed", "0",
                                       "--thresh", "2.0", "--ret_steps", "3", "--save_file", video])
        report = script.run(gen, args)
        assert report["dit_calls_computed"] < report["dit_calls_total"] == 2 * STEPS, report["dit_calls_computed"]
        assert os.path.getsize(video) > 0
        assert sorted(os.listdir(folder)) == [f"{name}.mp4", f"{name}.report.json"], os.listdir(folder)
        with open(os.path.join(folder, f"{name}.report.json")) as f:
            written = json.load(f)
        assert written["dit_calls_total"] == 2 * STEPS and written["arguments"]["task"] == task
        assert written["dit_calls_computed"] == report["dit_calls_computed"]
        if task == "t2v-A14B":
            modules = written["modules"]
            assert set(modules) == {"high", "low"}, modules
            assert sum(m["dit_calls_total"] for m in modules.values()) == 2 * STEPS, modules
            assert (modules["high"]["dit_calls_total"], modules["low"]["dit_calls_total"]) == (14, 6), modules
            assert set(written["settings"]) == {"high", "low"}, written.get("settings")
        print(f"cli {task} computed {report['dit_calls_computed']}/{report['dit_calls_total']}",
              {e: f"{m['dit_calls_computed']}/{m['dit_calls_total']}" for e, m in report.get("modules", {}).items()})
    assert len(gen.wan.WanT2V.built) == len(gen.wan.WanTI2V.built) == 1
    print("cli ok")


def check_cli_calibrate(gen, script, out_dir):
    """--calibrate through generate.py's real generate(args) (two videos into one file, an entry
    per expert), then --cache magcache with that file."""
    gen.wan.WanT2V = tiny_class(gen, "WanT2V")
    gen.SIZE_CONFIGS = dict(gen.SIZE_CONFIGS, **{"832*480": SIZE})
    calibration = os.path.join(out_dir, "calibration.json")
    common = ["--task", "t2v-A14B", "--size", "832*480", "--ckpt_dir", out_dir, "--frame_num", str(FRAMES),
              "--sample_steps", str(STEPS), "--offload_model", "False"]
    for seed in ("1", "2"):
        args = script.parse_args(gen, common + ["--base_seed", seed, "--calibrate", calibration,
                                                "--save_file", os.path.join(out_dir, f"calibration{seed}.mp4")])
        report = script.run(gen, args)
        assert report["dit_calls_computed"] == report["dit_calls_total"] == 2 * STEPS, report["dit_calls_computed"]
    with open(calibration) as f:
        written = json.load(f)
    split = split_of(gen, script, "t2v-A14B", STEPS, "unipc")
    assert set(written["experts"]) == {"high", "low"}, written.keys()
    for expert, entry in written["experts"].items():
        assert entry["videos"] == 2 and len(entry["magcache_ratios"]) == 2 * split[expert], (expert, entry)
    video = os.path.join(out_dir, "magcache.mp4")
    args = script.parse_args(gen, common + ["--base_seed", "0", "--cache", "magcache", "--magcache_ratios",
                                            calibration, "--magcache_thresh", "1.0", "--magcache_K", "3",
                                            "--save_file", video])
    report = script.run(gen, args)
    assert report["blocks_run"] < report["blocks_total"], (report["blocks_run"], report["blocks_total"])
    assert os.path.getsize(video) > 0 and os.path.isfile(os.path.join(out_dir, "magcache.report.json"))
    print("cli calibrate magcache blocks run", report["blocks_run"], "of", report["blocks_total"],
          {e: m["blocks_run"] for e, m in report["modules"].items()})


if __name__ == "__main__":
    wan_dir, check = sys.argv[1], sys.argv[2]
    gen = import_upstream(wan_dir)
    script = load_script()
    globals()[f"check_{check}"](gen, script, *sys.argv[3:])
