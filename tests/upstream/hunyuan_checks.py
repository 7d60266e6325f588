"""Checks of hunyuanvideo/easycache_sample_video.py against a real HunyuanVideo checkout, on a CPU,
with a tiny random-weight HYVideoDiffusionTransformer. Run by tests/test_hunyuan_upstream.py in a
subprocess (the real ``hyvideo``/``sample_video`` modules would clash with the stand-in's):

    python tests/upstream/hunyuan_checks.py /path/to/HunyuanVideo CHECK [ARG]

The real code runs unchanged except for CPU shims: ``hyvideo.modules.models.attention`` (flash
attention's varlen contract on PyTorch SDPA) and ``get_cu_seqlens`` (which allocates on CUDA).
The sampler, pipeline, denoising loop, scheduler, RoPE, DiT, xDiT wrapper and saver are
HunyuanVideo's; the text encoders and the VAE are small stand-ins (no weights exist here).
"""

import json
import os
import sys
import types

import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS, SIZE, FRAMES = 10, (64, 64), 5
TINY = ["--precision", "fp32", "--text-states-dim", "32", "--text-states-dim-2", "16", "--text-len", "16",
        "--flow-reverse"]


def cpu_attention(q, k, v, mode="flash", drop_rate=0, attn_mask=None, causal=False, cu_seqlens_q=None,
                  cu_seqlens_kv=None, max_seqlen_q=None, max_seqlen_kv=None, batch_size=1):
    """[b, s, a, d] -> [b, s, a*d]; flash varlen semantics: per batch row the valid tokens
    (video + unpadded text) attend among themselves, the padding among itself."""
    b, s = q.shape[:2]
    valid = torch.stack([cu_seqlens_q[2 * i + 1] - i * s for i in range(b)]).to(q.device)
    segment = torch.arange(s, device=q.device)[None] >= valid[:, None]
    mask = segment[:, None, :, None] == segment[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           attn_mask=mask)
    return out.transpose(1, 2).reshape(b, s, -1)


def cpu_cu_seqlens(text_mask, img_len):
    batch, max_len = text_mask.shape[0], text_mask.shape[1] + img_len
    cu = torch.zeros(2 * batch + 1, dtype=torch.int32, device=text_mask.device)
    for i, text_len in enumerate(text_mask.sum(dim=1)):
        cu[2 * i + 1] = i * max_len + text_len + img_len
        cu[2 * i + 2] = (i + 1) * max_len
    return cu


def import_upstream(hunyuan_dir):
    sys.path.insert(0, hunyuan_dir)
    import sample_video
    import hyvideo.modules.models as models
    models.attention = cpu_attention
    models.get_cu_seqlens = cpu_cu_seqlens
    return sample_video


def load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "easycache_sample_video", os.path.join(ROOT, "hunyuanvideo", "easycache_sample_video.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Anchored(torch.nn.Module):
    """A module with a device and a dtype, as diffusers' pipeline asks of its components."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def dtype(self):
        return self.anchor.dtype

    @property
    def device(self):
        return self.anchor.device


class TextEncoder(Anchored):
    """hidden_state [B, len, dim] and attention_mask [B, len] (pooled: [B, dim], no mask)."""

    def __init__(self, dim, length, pooled=False):
        super().__init__()
        self.dim, self.length, self.pooled = dim, length, pooled

    def text2tokens(self, text, data_type="video"):
        return [text] if isinstance(text, str) else list(text)

    def encode(self, prompts, data_type="video", device=None, **kwargs):
        states, masks = [], []
        for prompt in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, prompt)) + len(prompt))
            states.append(torch.randn(self.length, self.dim, generator=g))
            mask = torch.zeros(self.length, dtype=torch.long)
            mask[:min(self.length, len(prompt.split()) + 2)] = 1
            masks.append(mask)
        states = torch.stack(states).to(device)
        if self.pooled:
            return types.SimpleNamespace(hidden_state=states[:, 0], attention_mask=None)
        return types.SimpleNamespace(hidden_state=states, attention_mask=torch.stack(masks).to(device))


class VAE(Anchored):
    """Latents [B, 16, T, h, w] -> video [B, 3, 4(T-1)+1, 8h, 8w] in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.config = types.SimpleNamespace(block_out_channels=[1, 2, 3, 4], scaling_factor=0.476986)

    def enable_tiling(self):
        pass

    def decode(self, latents, return_dict=False, generator=None):
        video = torch.tanh(latents[:, :3].float())
        video = torch.cat([video[:, :, :1], video[:, :, 1:].repeat_interleave(4, dim=2)], 2)
        return (video.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4),)


def make_args(sample_video, script, *extra):
    weight = os.path.join(os.environ.get("HY_TMP", "/tmp"), "dit.pt")
    open(weight, "wb").write(b"random weights, built in code")
    argv = ["--model-base", os.path.dirname(weight), "--dit-weight", weight, "--prompt", "a cat walks",
            *TINY, *extra]
    return script.parse_args(sample_video, argv)


def make_sampler(args, double=1, single=1):
    """A real HunyuanVideoSampler around a tiny real DiT (built the way load_model builds it)."""
    from hyvideo.inference import HunyuanVideoSampler
    from hyvideo.modules.models import HYVideoDiffusionTransformer
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = HYVideoDiffusionTransformer(
            args, in_channels=16, out_channels=16, hidden_size=64, heads_num=2, mlp_width_ratio=2.0,
            mm_double_blocks_depth=double, mm_single_blocks_depth=single, rope_dim_list=[8, 12, 12], guidance_embed=True,
            dtype=torch.float32, device="cpu")
        for p in model.parameters():  # zero-initialised gates and heads would make v = 0
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    return HunyuanVideoSampler(args=args, vae=VAE(), vae_kwargs={"s_ratio": 8, "t_ratio": 4},
                               text_encoder=TextEncoder(args.text_states_dim, args.text_len),
                               text_encoder_2=TextEncoder(args.text_states_dim_2, args.text_len_2, pooled=True),
                               model=model, use_cpu_offload=False, device="cpu",
                               parallel_args={"ulysses_degree": 1, "ring_degree": 1})


def predict(sampler, cfg_scale=1.0, seed=0, steps=STEPS):
    out = sampler.predict(prompt="a cat walks", height=SIZE[0], width=SIZE[1], video_length=FRAMES, seed=seed,
                          infer_steps=steps, guidance_scale=cfg_scale, flow_shift=7.0, embedded_guidance_scale=6.0)
    return out["samples"]


def count_inner(sampler):
    batches = []
    inner = sampler.pipeline.transformer.forward

    def counted(*args, **kwargs):
        batches.append((args[0] if args else kwargs["x"]).shape[0])
        return inner(*args, **kwargs)
    sampler.pipeline.transformer.forward = counted
    return batches


def check_parser_spec(sample_video, script):
    import hyvideo.config
    parser = script.upstream_parser(hyvideo.config.parse_args)
    spec = {a.dest: [repr(a.default), sorted(a.choices) if a.choices else None] for a in parser._actions}
    print(json.dumps(spec))


def check_parse_args(sample_video, script):
    args = script.parse_args(sample_video, ["--model-base", ROOT, "--dit-weight", os.path.join(ROOT, "LICENSE"),
                                            "--prompt", "a cat"])
    assert (args.video_size, args.video_length, args.infer_steps, args.flow_shift) == ((720, 1280), 129, 50, 7.0)
    assert (args.cache, args.thresh, args.ret_steps) == ("easycache", 0.025, 5)
    for bad, expected in ((["--thresh", "-1"], "--thresh must be"), (["--video-size", "540", "960"], "multiple of 16"),
                          (["--ret-steps", "50"], "smaller than --infer-steps"),
                          (["--video-length", "128"], "--video-length must be 4n+1")):
        try:
            script.parse_args(sample_video, ["--model-base", ROOT, "--dit-weight", os.path.join(ROOT, "LICENSE"),
                                             "--prompt", "a cat", *bad])
        except SystemExit as exit_:
            assert exit_.code == 2, bad
        else:
            raise AssertionError(f"{bad} accepted")
    print("parse ok", expected)


def check_pipeline(sample_video, script):
    args = make_args(sample_video, script)
    for cfg_scale, batch in ((1.0, 1), (5.0, 2)):
        baseline = predict(make_sampler(args), cfg_scale)
        for kwargs in (dict(threshold=0.0, warmup_steps=0), dict(enabled=False)):
            sampler = make_sampler(args)
            cache = script.enable_easycache(sampler, **kwargs)
            assert torch.equal(predict(sampler, cfg_scale), baseline), (cfg_scale, kwargs)
            assert cache.report()["dit_calls_computed"] == STEPS
        sampler = make_sampler(args)
        batches = count_inner(sampler)
        cache = script.enable_easycache(sampler, threshold=0.1, warmup_steps=2)
        samples = predict(sampler, cfg_scale)
        report = cache.report()
        assert report["dit_calls_total"] == STEPS and set(batches) == {batch}, (report["dit_calls_total"], batches)
        assert len(batches) == report["dit_calls_computed"] < STEPS, [c["computed"] for c in report["calls"]]
        assert torch.isfinite(samples).all()
        first, computed = [c["computed"] for c in report["calls"]], len(batches)
        predict(sampler, cfg_scale, seed=3, steps=6)
        predict(sampler, cfg_scale)
        assert [c["computed"] for c in cache.report()["calls"]] == first  # nothing carried over between videos
        print(f"cfg {cfg_scale} computed {computed}/{STEPS} batch {batch}")


def check_contract(sample_video, script):
    """The real DiT called directly: a reused step keeps {"x": ...} or the bare tensor."""
    args = make_args(sample_video, script)
    sampler = make_sampler(args)
    model = sampler.pipeline.transformer
    cache = script.enable_easycache(sampler, threshold=1e9, warmup_steps=2)
    cos, sin = sampler.get_rotary_pos_embed(FRAMES, *SIZE)
    kw = dict(text_states=torch.randn(1, 16, 32), text_mask=torch.ones(1, 16, dtype=torch.long),
              text_states_2=torch.randn(1, 16), freqs_cos=cos, freqs_sin=sin, guidance=torch.tensor([6000.0]))
    for return_dict in (True, False):
        cache.session.start(5)
        cache.wrappers[None].start_video(0, 5)
        xs = [torch.randn(1, 16, 2, 8, 8) for _ in range(3)]
        outs = [model(x, torch.tensor([900.0 - 100 * i]), **kw, return_dict=return_dict) for i, x in enumerate(xs)]
        assert all(isinstance(o, dict) == return_dict for o in outs)
        v = [o["x"] if return_dict else o for o in outs]
        assert [c["computed"] for c in cache.session.rows] == [True, True, False]
        assert torch.allclose(v[2], xs[2] + (v[1] - xs[1]), atol=1e-6)
    print("contract ok")


class LongContextAttention:
    def __bool__(self):  # one rank: the blocks keep their plain attention path
        return False


def install_xfuser_standins(inference):
    """xfuser's attention and process-group queries for one rank, so parallelize_transformer runs."""
    for name in ("xfuser", "xfuser.core", "xfuser.core.long_ctx_attention"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["xfuser.core.long_ctx_attention"].xFuserLongContextAttention = LongContextAttention
    inference.get_sequence_parallel_world_size = lambda: 1
    inference.get_sequence_parallel_rank = lambda: 0
    inference.get_sp_group = lambda: types.SimpleNamespace(all_gather=lambda tensor, dim: tensor)


def check_xdit(sample_video, script):
    """HunyuanVideo's own parallelize_transformer (world size 1 through xfuser stand-ins) binds its
    forward on the instance; the cache, enabled after it, still skips steps."""
    import hyvideo.inference as inference
    install_xfuser_standins(inference)
    args = make_args(sample_video, script)
    baseline = predict(make_sampler(args))
    sampler = make_sampler(args)
    batches = count_inner(sampler)  # captured by the xDiT wrapper as its original_forward
    inference.parallelize_transformer(sampler.pipeline)
    model = sampler.pipeline.transformer
    assert model.forward.__func__.__name__ == "forward" and "forward" in model.__dict__
    off = script.enable_easycache(sampler, enabled=False)
    assert torch.equal(predict(sampler), baseline)
    assert len(batches) == STEPS
    off.disable()
    batches.clear()
    cache = script.enable_easycache(sampler, threshold=0.1, warmup_steps=2)
    predict(sampler)
    report = cache.report()
    assert len(batches) == report["dit_calls_computed"] < STEPS, report["dit_calls_computed"]
    print(f"xdit computed {len(batches)}/{STEPS}")


def count_blocks(sampler):
    runs = []
    model = sampler.pipeline.transformer
    for block in list(model.double_blocks._modules.values()) + list(model.single_blocks._modules.values()):
        block.register_forward_pre_hook(lambda *_: runs.append(1))
    return runs


PEERS = {
    "teacache": lambda script, s: script.enable_teacache(s, 0.3, [1.0, 0.0]),
    "magcache": lambda script, s: script.enable_magcache(s, [0.95] * STEPS, 0.12, 6, 0.2),
    "deltacache": lambda script, s: script.enable_deltacache(s, [1, 2], [0, 2, 3], 3, 3, [5, 8]),
}
OFF = {
    "teacache": lambda script, s: script.enable_teacache(s, 0.0, [1.0, 0.0]),
    "magcache": lambda script, s: script.enable_magcache(s, [0.95] * STEPS, 0.0),
    "deltacache": lambda script, s: script.enable_deltacache(s, [1, 2], [0, 2, 3], STEPS),
    "calibrate": lambda script, s: script.calibrate_sampler(s),
}


def check_peers(sample_video, script):
    """Each peer method on the real sampler, pipeline and DiT (3 double, 4 single blocks): computing
    every step is bitwise the baseline (batch 1 and 2); otherwise blocks run == the report, the
    TeaCache indicator is the first double block's modulated image input, reused TeaCache steps
    feed the head image tokens + the stored residual, and state resets per video."""
    args = make_args(sample_video, script)
    for cfg_scale in (1.0, 5.0):
        baseline = predict(make_sampler(args, 3, 4), cfg_scale)
        for name, enable in OFF.items():
            sampler = make_sampler(args, 3, 4)
            runs = count_blocks(sampler)
            cache = enable(script, sampler)
            assert torch.equal(predict(sampler, cfg_scale), baseline), (name, cfg_scale)
            assert cache.report()["blocks_run"] == len(runs) == 7 * STEPS, name
        for name, enable in PEERS.items():
            sampler = make_sampler(args, 3, 4)
            runs = count_blocks(sampler)
            model = sampler.pipeline.transformer
            seen = {"qkv": [], "embedded": [], "head": []}
            model.double_blocks[0].img_attn_qkv.register_forward_pre_hook(lambda m, a: seen["qkv"].append(a[0]))
            model.img_in.register_forward_hook(lambda m, a, out: seen["embedded"].append(out))
            model.final_layer.register_forward_pre_hook(lambda m, a: seen["head"].append(a[0]))
            cache = enable(script, sampler)
            samples = predict(sampler, cfg_scale)
            report = cache.report()
            computed = [c["computed"] for c in report["calls"]]
            blocks_run = len(runs)
            assert report["blocks_run"] == blocks_run < 7 * STEPS and torch.isfinite(samples).all(), name
            assert 0 < sum(computed) < STEPS, (name, computed)
            if name == "teacache":
                assert torch.allclose(cache.policies[None].prev_indicator[0], seen["qkv"][-1], atol=1e-5)
                reused = max(i for i, c in enumerate(computed) if not c)
                source = max(i for i in range(reused) if computed[i])
                residual = seen["head"][source] - seen["embedded"][source]
                assert torch.allclose(seen["head"][reused], seen["embedded"][reused] + residual, atol=1e-5)
            predict(sampler, cfg_scale, seed=3, steps=6)
            predict(sampler, cfg_scale)
            assert [c["computed"] for c in cache.report()["calls"]] == computed, name
            print(f"{name} cfg {cfg_scale} computed {sum(computed)}/{STEPS} blocks {blocks_run}/{7 * STEPS}")


def check_registry(sample_video, script):
    """Every policy the script's registry holds, on the real sampler, pipeline and DiT (3 double,
    4 single blocks), batch 1 and 2: at its exact settings bitwise the baseline; at its eager
    settings fewer calls (whole-model) or blocks (block-level) reach the DiT, as reported."""
    args = make_args(sample_video, script)
    for cfg_scale in (1.0, 5.0):
        baseline = predict(make_sampler(args, 3, 4), cfg_scale)
        for name, spec in sorted(script.REGISTRY.items()):
            needs = {"coefficients": [1.0, 0.0], "ratios": [1.0] + [0.95] * (STEPS - 1)}
            given = {k: v for k, v in needs.items() if k in {f.setting for f in spec.flags}}
            sampler = make_sampler(args, 3, 4)
            script.enable_cache(sampler, name, **given, **spec.exact)
            assert torch.equal(predict(sampler, cfg_scale), baseline), (name, cfg_scale)
            sampler = make_sampler(args, 3, 4)
            batches, runs = count_inner(sampler), count_blocks(sampler)
            cache = script.enable_cache(sampler, name, **given, **spec.eager)
            samples = predict(sampler, cfg_scale)
            report = cache.report()
            assert torch.isfinite(samples).all() and report["dit_calls_computed"] < STEPS, (name, report["calls"])
            if spec.make.level == "model":
                assert len(batches) == report["dit_calls_computed"], name
            else:
                assert len(runs) == report["blocks_run"] < 7 * STEPS, name
            print(f"registry {name} cfg {cfg_scale} computed {report['dit_calls_computed']}/{STEPS}")


def check_peers_xdit(sample_video, script):
    """HunyuanVideo's own parallelize_transformer (world size 1 through xfuser stand-ins) iterates
    ``double_blocks + single_blocks`` itself before calling the forward; the hooked block loops
    leave that iteration the real blocks and still cache inside the forward."""
    import hyvideo.inference as inference
    install_xfuser_standins(inference)
    args = make_args(sample_video, script)
    for name, enable in PEERS.items():
        reference = enable(script, make_sampler(args, 3, 4))
        expected = predict(reference.pipe)
        sampler = make_sampler(args, 3, 4)
        inference.parallelize_transformer(sampler.pipeline)
        runs = count_blocks(sampler)
        cache = enable(script, sampler)
        samples = predict(sampler)
        model = sampler.pipeline.transformer
        blocks = list(model.double_blocks._modules.values()) + list(model.single_blocks._modules.values())
        assert all(isinstance(b.hybrid_seq_parallel_attn, LongContextAttention) for b in blocks)
        assert torch.allclose(samples, expected, atol=1e-5), name
        assert cache.report()["blocks_run"] == len(runs) == reference.report()["blocks_run"] < 7 * STEPS
        print(f"xdit {name} blocks {len(runs)}/{7 * STEPS}")


def check_peers_cli(sample_video, script, out_dir):
    """Our run() with --calibrate, then each --cache, through the real sample_video.main()."""
    calibration = os.path.join(out_dir, "cal.json")
    sample_video.HunyuanVideoSampler.from_pretrained = staticmethod(lambda path, args: make_sampler(args, 3, 4))
    common = ["--video-size", "64", "64", "--video-length", "5", "--infer-steps", str(STEPS), "--seed", "0"]
    for i, extra in enumerate((["--calibrate", calibration],
                               ["--cache", "magcache", "--magcache-ratios", calibration, "--magcache-thresh", "0.5"],
                               ["--cache", "teacache", "--teacache-coefficients", "1,0", "--teacache-thresh", "0.3"],
                               ["--cache", "deltacache", "--delta-double-cached", "1-2", "--delta-single-cached",
                                "0,2-3", "--delta-warmup", "3", "--delta-interval", "3", "--delta-single-steps", "5,8"])):
        out = os.path.join(out_dir, f"run{i}")
        args = make_args(sample_video, script, *common, "--save-path", out, *extra)
        report = script.run(sample_video, args)
        saved = [f for f in os.listdir(out) if f.endswith(".report.json")]
        assert len(saved) == 1 and json.load(open(os.path.join(out, saved[0])))["blocks_run"] == report["blocks_run"]
    assert len(json.load(open(calibration))["magcache_ratios"]) == STEPS
    print("peers cli ok")


def check_cli_run(sample_video, script, out_dir):
    """Our run(): the real sample_video.main(), sampler class and save_videos_grid; only the
    checkpoint loading is replaced by the tiny sampler."""
    args = make_args(sample_video, script, "--video-size", "64", "64", "--video-length", "5", "--infer-steps",
                     str(STEPS), "--seed", "0", "--thresh", "0.1", "--ret-steps", "2", "--save-path", out_dir)
    sample_video.HunyuanVideoSampler.from_pretrained = staticmethod(lambda path, args: make_sampler(args))
    report = script.run(sample_video, args)
    videos = [f for f in os.listdir(out_dir) if f.endswith(".mp4")]
    assert len(videos) == 1, os.listdir(out_dir)
    saved = json.load(open(os.path.join(out_dir, videos[0][:-4] + ".report.json")))
    assert saved["dit_calls_computed"] == report["dit_calls_computed"] < STEPS == saved["dit_calls_total"]
    print("cli ok", videos[0])


if __name__ == "__main__":
    hunyuan_dir, check, *rest = sys.argv[1:]
    sv = import_upstream(hunyuan_dir)
    globals()[f"check_{check}"](sv, load_script(), *rest)
