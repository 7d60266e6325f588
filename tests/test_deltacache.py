"""Profiling-based delta cache (peer method): schedule and segments by hand, and on the stand-in."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, WAN_STANDIN, load_script, end_worker
from easycache.deltacache import WAN21_14B_T2V_FOREGROUND, DeltaCachePolicy, block_segments


def test_published_profile_segments():
    segments = block_segments(40, WAN21_14B_T2V_FOREGROUND)
    cached = [(s, e) for s, e, c in segments if c]
    assert cached == [(0, 1), (2, 8), (10, 21), (25, 33), (37, 39)]  # one delta per isolated block or run
    assert sum(e - s for s, e in cached) == 28
    assert [s for s, e, c in segments if not c] == list(WAN21_14B_T2V_FOREGROUND)
    assert [b for s, e, _ in segments for b in range(s, e)] == list(range(40))
    with pytest.raises(ValueError):
        block_segments(30, WAN21_14B_T2V_FOREGROUND)


def test_published_schedule_has_14_full_steps_of_50():
    policy = DeltaCachePolicy(6, 6)
    policy.start_video(50)
    full = []
    for step in range(50):
        if policy.decide(step).compute:
            full.append(step)
            policy.record_computed((0, 0), [torch.zeros(1)], [torch.ones(1)])
    assert full == [0, 1, 2, 3, 4, 5, 6, 12, 18, 24, 30, 36, 42, 48]


STEPS = 12


@pytest.fixture
def pipe_factory(wan_standin, tmp_path):
    _, wan = wan_standin
    return lambda: wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=str(tmp_path))


def t2v(pipe):
    pipe.generate("a red ball", size=(832, 480), frame_num=5, sampling_steps=STEPS, seed=0, offload_model=False)
    return pipe.latents[0].clone()


def test_all_full_steps_are_bitwise_the_baseline(pipe_factory, wan_script):
    baseline = t2v(pipe_factory())
    pipe = pipe_factory()
    cache = wan_script.enable_deltacache(pipe, foreground=(1,), warmup_steps=STEPS, interval=1)
    assert torch.equal(t2v(pipe), baseline)
    assert cache.report()["blocks_run"] == 2 * STEPS * 2


def test_partial_steps_run_only_the_foreground_blocks_as_reported(pipe_factory, wan_script):
    pipe = pipe_factory()
    runs = {0: 0, 1: 0}
    for i in (0, 1):
        pipe.model.blocks[i].register_forward_pre_hook(lambda module, args, i=i: runs.__setitem__(i, runs[i] + 1))
    cache = wan_script.enable_deltacache(pipe, foreground=(1,), warmup_steps=3, interval=4)
    latents = t2v(pipe)
    report = cache.report()
    full_steps = [0, 1, 2, 4, 8]
    # block 1 (foreground) runs on every call; block 0 only on full steps, both branches
    assert runs == {0: 2 * len(full_steps), 1: 2 * STEPS}
    assert report["blocks_run"] == sum(runs.values()) and report["blocks_total"] == 2 * STEPS * 2
    assert [c["step"] for c in report["calls"] if c["computed"] and c["branch"] == "cond"] == full_steps
    assert report["foreground_blocks"] == [1] and torch.isfinite(latents).all()


def _ranks_worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=2)
    sys.path.insert(0, WAN_STANDIN)
    import wan
    script = load_script("wan2_1/easycache_generate.py", "easycache_generate")
    pipe = wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=tmp, rank=rank,
                      dit_fsdp=True, use_usp=True)
    cache = script.enable_deltacache(pipe, foreground=(1,), warmup_steps=3, interval=4)
    t2v(pipe)
    report = cache.report()
    with open(f"{tmp}/delta{rank}.json", "w") as f:
        json.dump({"calls": [c["computed"] for c in report["calls"]], "blocks_run": report["blocks_run"],
                   "agree": report["ranks_agree"], "latents": pipe.latents[0].flatten()[:32].tolist()}, f)
    end_worker()


def test_two_ranks_with_fsdp_and_sequence_parallel_agree(tmp_path):
    mp.spawn(_ranks_worker, args=(str(tmp_path),), nprocs=2)
    results = [json.loads((tmp_path / f"delta{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    assert results[0]["agree"] is True and results[0]["blocks_run"] == 2 * 5 * 2 + 2 * 7


def run_cli(args, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, os.path.join(ROOT, "wan2_1", "easycache_generate.py"), "--ckpt_dir",
                           str(ckpt), "--size", "832*480", "--frame_num", "5", "--sample_steps", "12",
                           "--base_seed", "0", "--task", "t2v-1.3B", *args], cwd=WAN_STANDIN,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_cli_deltacache_run_and_its_errors(tmp_path):
    result = run_cli(["--cache", "deltacache"], tmp_path)
    assert result.returncode == 2 and result.stderr.strip().endswith(
        "no published delta-cache profile for --task t2v-1.3B (only t2v-14B); pass --delta_foreground with "
        "the blocks that must always run")
    result = run_cli(["--cache", "deltacache", "--delta_foreground", "5"], tmp_path)
    assert result.returncode == 2 and "must lie in 0..1 for --task t2v-1.3B" in result.stderr
    video = tmp_path / "d.mp4"
    result = run_cli(["--cache", "deltacache", "--delta_foreground", "1", "--delta_warmup", "3", "--delta_interval",
                      "4", "--save_file", str(video)], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "d.report.json").read_text())
    assert report["cache"] == "deltacache" and report["dit_calls_computed"] == 10
    assert report["blocks_run"] == 2 * 5 * 2 + 2 * 7
