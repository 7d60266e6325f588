"""Two processes over torch.distributed (gloo) on the stand-in's xDiT path: the cache sits outside the
sequence-parallel forward bound on the instance, and every rank takes the same decisions."""

import json
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, load_script, end_worker

HY_STANDIN = os.path.join(ROOT, "tests", "hunyuan_standin")
SCRIPT = os.path.join(ROOT, "hunyuanvideo", "easycache_sample_video.py")
WORLD, STEPS = 2, 12


def _sampler(tmp, degree):
    sys.path.insert(0, HY_STANDIN)
    import hyvideo.config
    import hyvideo.inference
    weight = os.path.join(tmp, "dit.pt")
    sys.argv = ["sample_video.py", "--model-base", tmp, "--dit-weight", weight, "--flow-reverse",
                "--ulysses-degree", str(degree)]
    args = hyvideo.config.parse_args()
    return hyvideo.inference.HunyuanVideoSampler.from_pretrained(tmp, args=args)


def _predict(sampler, cfg_scale):
    sampler.predict(prompt="a cat walks on the grass", height=64, width=64, video_length=5, seed=0,
                    infer_steps=STEPS, guidance_scale=cfg_scale, flow_shift=7.0, embedded_guidance_scale=6.0)
    return sampler.pipeline.last_latents


def _worker(rank, tmp, cfg_scale):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    script = load_script("hunyuanvideo/easycache_sample_video.py", "easycache_sample_video")
    sampler = _sampler(tmp, WORLD)
    model = sampler.pipeline.transformer
    assert "forward" in model.__dict__  # xDiT's forward, bound on the instance when the sampler was built
    baseline = _predict(sampler, cfg_scale).clone()
    inner_calls, inner = [], model.forward
    model.forward = lambda *a, **k: inner_calls.append(1) or inner(*a, **k)
    cache = script.enable_easycache(sampler, threshold=0.3, warmup_steps=3)
    latents = _predict(sampler, cfg_scale)
    report = cache.report()
    result = {"calls": [c["computed"] for c in report["calls"]], "inner": len(inner_calls),
              "computed": report["dit_calls_computed"], "agree": report["ranks_agree"],
              "world": report["world_size"], "baseline": baseline.flatten().tolist(),
              "latents": latents.flatten()[:64].tolist()}
    with open(f"{tmp}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    end_worker()


def test_sequence_parallel_sampler_caches_with_identical_decisions(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    mp.spawn(_worker, args=(str(tmp_path), 5.0), nprocs=WORLD)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for result in ranks:
        assert result["world"] == WORLD and result["agree"] is True
        assert result["inner"] == result["computed"] == sum(result["calls"]) < STEPS  # caching is on
    assert ranks[0]["calls"] == ranks[1]["calls"]
    assert ranks[0]["latents"] == ranks[1]["latents"]

    # the stand-in's sequence parallelism is real: two ranks compute what one process does
    single = _sampler(str(tmp_path), 1)
    expected = _predict(single, 5.0).flatten()
    assert torch.allclose(torch.tensor(ranks[0]["baseline"]), expected, atol=1e-4)


def test_torchrun_cli_with_ulysses_degree_runs_with_the_cache(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    out = tmp_path / "results"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SCRIPT,
         "--video-size", "64", "64", "--video-length", "5", "--infer-steps", str(STEPS), "--seed", "0",
         "--flow-reverse", "--prompt", "a cat", "--model-base", str(tmp_path), "--dit-weight",
         str(tmp_path / "dit.pt"), "--ulysses-degree", "2", "--thresh", "0.3", "--ret-steps", "3",
         "--save-path", str(out)],
        cwd=HY_STANDIN, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "decisions identical on all 2 ranks: yes" in result.stdout
    reports = list(out.glob("*.report.json"))
    assert len(reports) == 1 and len(list(out.glob("*.mp4"))) == 1  # local rank 0 saves
    report = json.loads(reports[0].read_text())
    assert report["world_size"] == 2 and report["ranks_agree"] is True
    assert report["dit_calls_computed"] < report["dit_calls_total"] == STEPS
