"""Two processes over torch.distributed (gloo): every rank takes the same decisions."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, WAN_STANDIN, load_script, end_worker

WORLD = 2


def _init(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)


def _policy_worker(rank, tmp, agree):
    """Rank 1 sees inputs that change twice as fast: alone, it would compute more often."""
    _init(rank, tmp)
    from easycache.policy import EasyCachePolicy
    from easycache.runtime import agree_across_ranks
    policy = EasyCachePolicy(threshold=0.3, warmup_steps=2)
    policy.start_video(12)
    marks = ""
    for step in range(12):
        x = [torch.full((4,), float(step * (1 + rank)))]
        d = policy.decide(step, x, agree=(lambda w: agree_across_ranks(w, x[0].device)) if agree else None)
        if d.compute:
            policy.record_computed(0, x, [2 * x[0] + 14])
        marks += "C" if d.compute else "R"
    with open(f"{tmp}/policy{rank}.json", "w") as f:
        json.dump(marks, f)
    end_worker()


@pytest.mark.parametrize("agree", [False, True])
def test_agreement_keeps_ranks_with_different_statistics_in_step(tmp_path, agree):
    mp.spawn(_policy_worker, args=(str(tmp_path), agree), nprocs=WORLD)
    marks = [json.loads((tmp_path / f"policy{r}.json").read_text()) for r in range(WORLD)]
    if agree:
        assert marks[0] == marks[1]
        # the union of the ranks' wishes: rank 1 alone computes more often
        assert marks[0].count("C") >= max(m.count("C") for m in marks)
    else:
        assert marks[0] != marks[1]  # without agreement the ranks would diverge


def _pipeline_worker(rank, tmp):
    _init(rank, tmp)
    sys.path.insert(0, WAN_STANDIN)
    import wan
    script = load_script("wan2_1/easycache_generate.py", "easycache_generate")
    pipe = wan.WanT2V(config=wan.configs.WAN_CONFIGS["t2v-1.3B"], checkpoint_dir=tmp, device_id=0, rank=rank,
                      dit_fsdp=True, use_usp=True)
    assert type(pipe.model).__name__ == "FullyShardedDataParallel"
    inner_calls = []
    inner = pipe.model.forward
    pipe.model.forward = lambda *a, **k: inner_calls.append(1) or inner(*a, **k)
    cache = script.enable_easycache(pipe, threshold=0.5, warmup_steps=3)
    pipe.generate("a red ball", size=(832, 480), frame_num=5, sampling_steps=12, seed=0, offload_model=False)
    report = cache.report()
    result = {"calls": [c["computed"] for c in report["calls"]], "inner": len(inner_calls),
              "computed": report["dit_calls_computed"], "agree": report["ranks_agree"],
              "latents": pipe.latents[0].flatten()[:64].tolist()}
    with open(f"{tmp}/pipe{rank}.json", "w") as f:
        json.dump(result, f)
    end_worker()


def test_sequence_parallel_fsdp_pipeline_caches_identically_on_every_rank(tmp_path):
    mp.spawn(_pipeline_worker, args=(str(tmp_path),), nprocs=WORLD)
    results = [json.loads((tmp_path / f"pipe{r}.json").read_text()) for r in range(WORLD)]
    assert results[0]["calls"] == results[1]["calls"]
    assert results[0]["latents"] == results[1]["latents"]
    for result in results:
        assert result["agree"] is True
        assert result["inner"] == result["computed"] < len(result["calls"]) == 24


def test_torchrun_with_ulysses_and_fsdp_keeps_the_cache_on(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    video = tmp_path / "mp.mp4"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           os.path.join(ROOT, "wan2_1", "easycache_generate.py"), "--task", "t2v-1.3B", "--size", "832*480",
           "--ckpt_dir", str(ckpt), "--frame_num", "5", "--sample_steps", "12", "--base_seed", "0",
           "--thresh", "0.5", "--ret_steps", "3", "--dit_fsdp", "--t5_fsdp", "--ulysses_size", str(WORLD),
           "--save_file", str(video)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=WAN_STANDIN, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "mp.report.json").read_text())
    assert report["world_size"] == WORLD and report["ranks_agree"] is True
    assert report["dit_calls_computed"] < report["dit_calls_total"] == 24
    assert "decisions identical on all 2 ranks: yes" in result.stdout
