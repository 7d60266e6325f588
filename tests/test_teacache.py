"""TeaCache (peer method): the policy by hand, and its block-stack hook on Wan-shaped pipelines."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, WAN_STANDIN, load_script, end_worker
from easycache.teacache import WAN21_TEACACHE_COEFFICIENTS, TeaCachePolicy, polyval, relative_l1

IDENTITY = [1.0, 0.0]  # poly(x) = x: the rescaled indicator is the relative L1 itself


def const(value):
    return [torch.full((4,), float(value))]


def decide_all(policy, values):
    policy.start_video(len(values))
    marks = ""
    for step, value in enumerate(values):
        d = policy.decide(step, const(value))
        if d.compute:
            policy.record_computed(0, const(0), const(1))
        marks += "C" if d.compute else "R"
    return marks


def test_polyval_and_relative_l1_match_numpy():
    for coefficients in WAN21_TEACACHE_COEFFICIENTS.values():
        for x in (0.0, 0.013, 0.2):
            assert polyval(coefficients, x) == pytest.approx(np.poly1d(coefficients)(x), rel=1e-12)
    assert relative_l1([torch.tensor([3.0, -1.0])], [torch.tensor([2.0, 2.0])]) == pytest.approx((1 + 3) / 4)


def test_hand_worked_decisions_without_ret_steps():
    # relative changes 2/16, 2/18, 2/20, ...: E = .125 (R), .236 (R), .336 >= .25 (C);
    # then 2/22 + 2/24 (R, R) + 2/26 = .2511 >= .25 (C); the last step is forced (C)
    policy = TeaCachePolicy(0.25, IDENTITY)
    assert decide_all(policy, [16, 18, 20, 22, 24, 26, 28, 30]) == "CRRCRRCC"
    assert policy.decisions[1].eps == pytest.approx(0.125)
    assert [d.reason for d in policy.decisions][-2:] == ["threshold", "last"]


def test_hand_worked_decisions_with_ret_steps():
    # first 5 steps forced, then 2/24 + 2/26 + 2/28 = .232 < .25 and no forced last step
    policy = TeaCachePolicy(0.25, IDENTITY, use_ret_steps=True)
    assert decide_all(policy, [16, 18, 20, 22, 24, 26, 28, 30]) == "CCCCCRRR"


def test_rescaling_polynomial_is_applied():
    policy = TeaCachePolicy(1.0, [4.0, 0.0, 0.0])  # 4 x^2
    decide_all(policy, [16, 24, 30, 40])
    assert policy.decisions[1].eps == pytest.approx(4 * 0.5**2)


def test_zero_indicator_norm_forces_compute():
    policy = TeaCachePolicy(10.0, IDENTITY)
    assert decide_all(policy, [0, 0, 0, 0]) == "CCCC"
    assert policy.decisions[1].reason == "no-statistic"


def test_reuse_adds_the_branch_residual():
    policy = TeaCachePolicy(10.0, IDENTITY)
    policy.start_video(4)
    policy.decide(0, const(1))
    policy.record_computed(0, const(1), const(5))
    policy.record_computed(1, const(1), const(2))
    assert policy.reuse(0, const(10))[0][0].item() == 14 and policy.reuse(1, const(10))[0][0].item() == 11


# --- on the stand-in Wan2.1 pipelines ----------------------------------------------------

STEPS, SIZE, FRAMES = 12, (832, 480), 5


@pytest.fixture
def pipe_factory(wan_standin, tmp_path):
    _, wan = wan_standin
    return lambda: wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=str(tmp_path))


def stack_runs(pipe):
    """How often the first block runs (once per computed stack)."""
    runs = []
    pipe.model.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
    return runs


def t2v(pipe):
    pipe.generate("a red ball", size=SIZE, frame_num=FRAMES, sampling_steps=STEPS, seed=0, offload_model=False)
    return pipe.latents[0].clone()


def test_zero_threshold_is_bitwise_the_baseline(pipe_factory, wan_script):
    baseline = t2v(pipe_factory())
    pipe = pipe_factory()
    cache = wan_script.enable_teacache(pipe, 0.0, IDENTITY)
    assert torch.equal(t2v(pipe), baseline)
    assert cache.report()["dit_calls_computed"] == 2 * STEPS


@pytest.mark.parametrize("use_ret_steps", [False, True])
def test_reuse_skips_the_block_stack_exactly_as_reported(pipe_factory, wan_script, use_ret_steps):
    pipe = pipe_factory()
    runs = stack_runs(pipe)
    model_calls = []
    pipe.model.register_forward_pre_hook(lambda module, args: model_calls.append(1))
    cache = wan_script.enable_teacache(pipe, 0.5, IDENTITY, use_ret_steps=use_ret_steps)
    latents = t2v(pipe)
    report = cache.report()
    assert len(runs) == report["dit_calls_computed"] < report["dit_calls_total"] == len(model_calls) == 2 * STEPS
    calls = report["calls"]
    assert all(calls[2 * s]["computed"] == calls[2 * s + 1]["computed"] for s in range(STEPS))
    forced = 5 if use_ret_steps else 1
    assert all(c["computed"] for c in calls[:2 * forced])
    if use_ret_steps:
        assert calls[-1].get("reason") != "last"
    else:
        assert calls[-1]["computed"] and calls[-1]["reason"] == "last"
    assert torch.isfinite(latents).all()


def test_indicator_is_the_time_embedding(pipe_factory, wan_script):
    """Without ret steps the indicator is e = time_embedding(sinusoid(t)): recompute it independently."""
    pipe = pipe_factory()
    seen_t = []
    pipe.model.register_forward_pre_hook(lambda module, args, kwargs: seen_t.append(kwargs["t"]), with_kwargs=True)
    cache = wan_script.enable_teacache(pipe, 0.5, IDENTITY)
    t2v(pipe)
    from wan.modules.model import sinusoidal_embedding_1d
    with torch.no_grad():
        e = [pipe.model.time_embedding(sinusoidal_embedding_1d(pipe.model.freq_dim, t)) for t in seen_t[::2]]
    d = cache.forward.policy.decisions[1]
    assert d.eps == pytest.approx(relative_l1([e[1]], [e[0]]), rel=1e-5)


def test_disable_restores_blocks_and_hooks(pipe_factory, wan_script):
    pipe = pipe_factory()
    baseline = t2v(pipe)
    blocks_class = type(pipe.model.blocks)
    cache = wan_script.enable_teacache(pipe, 0.5, IDENTITY)
    assert type(pipe.model.blocks) is not blocks_class
    assert not torch.equal(t2v(pipe), baseline)
    cache.disable()
    assert type(pipe.model.blocks) is blocks_class and not pipe.model.time_embedding._forward_hooks
    assert torch.equal(t2v(pipe), baseline)


def test_published_coefficients_are_chosen_from_task_and_size(wan_script):
    pick = wan_script.wan_teacache_coefficients
    assert pick("t2v-1.3B", "832*480", False) == WAN21_TEACACHE_COEFFICIENTS[("t2v-1.3B", False)]
    assert pick("t2i-14B", "1024*1024", True) == WAN21_TEACACHE_COEFFICIENTS[("t2v-14B", True)]
    assert pick("i2v-14B", "480*832", False) == WAN21_TEACACHE_COEFFICIENTS[("i2v-14B-480P", False)]
    assert pick("i2v-14B", "1280*720", True) == WAN21_TEACACHE_COEFFICIENTS[("i2v-14B-720P", True)]
    assert pick("flf2v-14B", "1280*720", False) is None


def _ranks_worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    sys.path.insert(0, WAN_STANDIN)
    import wan
    script = load_script("wan2_1/easycache_generate.py", "easycache_generate")
    pipe = wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=tmp, rank=rank,
                      dit_fsdp=True, use_usp=True)
    runs = []
    pipe.model.module.blocks[0].register_forward_pre_hook(lambda module, args: runs.append(1))
    cache = script.enable_teacache(pipe, 0.5, IDENTITY)
    t2v(pipe)
    report = cache.report()
    with open(f"{tmp}/tea{rank}.json", "w") as f:
        json.dump({"calls": [c["computed"] for c in report["calls"]], "runs": len(runs),
                   "agree": report["ranks_agree"], "latents": pipe.latents[0].flatten()[:32].tolist()}, f)
    end_worker()


def test_two_ranks_with_fsdp_and_sequence_parallel_decide_identically(tmp_path):
    mp.spawn(_ranks_worker, args=(str(tmp_path),), nprocs=2)
    results = [json.loads((tmp_path / f"tea{r}.json").read_text()) for r in range(2)]
    assert results[0]["calls"] == results[1]["calls"] and results[0]["latents"] == results[1]["latents"]
    for result in results:
        assert result["agree"] is True
        assert result["runs"] == sum(result["calls"]) < len(result["calls"])


def run_cli(args, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, os.path.join(ROOT, "wan2_1", "easycache_generate.py"), "--ckpt_dir",
                           str(ckpt), "--size", "832*480", "--frame_num", "5", "--sample_steps", "12",
                           "--base_seed", "0", *args], cwd=WAN_STANDIN, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_cli_teacache_run_and_its_errors(tmp_path):
    video = tmp_path / "tea.mp4"
    result = run_cli(["--task", "t2v-1.3B", "--cache", "teacache", "--teacache_thresh", "0.5",
                      "--save_file", str(video)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tea.report.json").read_text())
    assert report["cache"] == "teacache" and report["threshold"] == 0.5
    assert report["coefficients"] == WAN21_TEACACHE_COEFFICIENTS[("t2v-1.3B", False)]
    assert "TeaCache (thresh 0.5)" in result.stdout

    result = run_cli(["--task", "flf2v-14B", "--first_frame", "generate.py", "--last_frame", "generate.py",
                      "--cache", "teacache"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("easycache_generate.py: error: TeaCache published no coefficients for "
                                     "--task flf2v-14B; pass --teacache_coefficients c4,c3,c2,c1,c0")
    result = run_cli(["--task", "t2v-1.3B", "--cache", "teacache", "--teacache_coefficients", "1,x"], tmp_path)
    assert result.returncode == 2 and "must be comma-separated numbers" in result.stderr


@pytest.mark.parametrize("method", ["teacache", "magcache", "deltacache"])
def test_peer_state_is_reset_per_video(pipe_factory, wan_script, method):
    enable = {
        "teacache": lambda p: wan_script.enable_teacache(p, 0.5, IDENTITY),
        "magcache": lambda p: wan_script.enable_magcache(p, [1.0, 1.0] + [0.97, 0.95] * (STEPS - 1), 0.2),
        "deltacache": lambda p: wan_script.enable_deltacache(p, (1,), 3, 4),
    }[method]

    def video(pipe, seed):
        pipe.generate("a red ball", size=SIZE, frame_num=FRAMES, sampling_steps=STEPS, seed=seed, offload_model=False)
        return pipe.latents[0].clone()

    fresh = pipe_factory()
    fresh_cache = enable(fresh)
    expected = video(fresh, 0)
    pipe = pipe_factory()
    cache = enable(pipe)
    video(pipe, 1)
    assert torch.equal(video(pipe, 0), expected)
    assert cache.report()["calls"] == fresh_cache.report()["calls"]
    assert not all(c["computed"] for c in fresh_cache.report()["calls"])
