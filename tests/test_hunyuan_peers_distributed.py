"""The peer methods on the stand-in's xDiT path, two processes over torch.distributed (gloo): the
block loops are hooked inside the sequence-parallel forward (which iterates the blocks itself to
set up attention), every rank takes the same decisions, and TeaCache's statistics, summed over
the ranks' shards, are those of one process."""

import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT, load_script, end_worker

HY_STANDIN = os.path.join(ROOT, "tests", "hunyuan_standin")
WORLD, STEPS = 2, 12


def _sampler(tmp, degree):
    sys.path.insert(0, HY_STANDIN)
    import hyvideo.config
    import hyvideo.inference
    sys.argv = ["sample_video.py", "--model-base", tmp, "--dit-weight", os.path.join(tmp, "dit.pt"), "--flow-reverse",
                "--ulysses-degree", str(degree)]
    return hyvideo.inference.HunyuanVideoSampler.from_pretrained(tmp, args=hyvideo.config.parse_args())


def _run_methods(script, sampler):
    """Per method: decisions, eps and blocks run, with the latents' checksum."""
    results = {}
    enables = {"teacache": lambda s: script.enable_teacache(s, 0.3, [1.0, 0.0]),
               "magcache": lambda s: script.enable_magcache(s, [0.95] * STEPS, 0.12, 6, 0.25),
               "deltacache": lambda s: script.enable_deltacache(s, [1], [0, 2], 3, 3, [5, 9])}
    for name, enable in enables.items():
        cache = enable(sampler)
        sampler.predict(prompt="a cat walks on the grass", height=64, width=64, video_length=5, seed=0,
                        infer_steps=STEPS, guidance_scale=5.0, flow_shift=7.0, embedded_guidance_scale=6.0)
        report = cache.report()
        results[name] = {"computed": [c["computed"] for c in report["calls"]], "eps": [c["eps"] for c in report["calls"]],
                         "blocks_run": report["blocks_run"], "agree": report["ranks_agree"],
                         "latents": sampler.pipeline.last_latents.flatten()[:32].tolist()}
        cache.disable()
    return results


def _worker(rank, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    script = load_script("hunyuanvideo/easycache_sample_video.py", "easycache_sample_video")
    sampler = _sampler(tmp, WORLD)
    assert "forward" in sampler.pipeline.transformer.__dict__  # xDiT's forward, bound on the instance
    with open(f"{tmp}/rank{rank}.json", "w") as f:
        json.dump(_run_methods(script, sampler), f)
    end_worker()


def test_two_ranks_take_the_decisions_of_one_process(tmp_path):
    (tmp_path / "dit.pt").write_bytes(b"stand-in")
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    single = _run_methods(load_script("hunyuanvideo/easycache_sample_video.py", "easycache_sample_video"),
                          _sampler(str(tmp_path), 1))
    for name in ("teacache", "magcache", "deltacache"):
        for result in ranks:
            assert result[name]["agree"] is True, name
            assert result[name]["computed"] == ranks[0][name]["computed"] == single[name]["computed"], name
            assert result[name]["blocks_run"] == single[name]["blocks_run"], name
            assert torch.allclose(torch.tensor(result[name]["latents"]), torch.tensor(single[name]["latents"]),
                                  atol=1e-4), name
        assert 0 < sum(single[name]["computed"]) < STEPS, name
    # TeaCache's indicator on a shard, summed over ranks: the whole-sequence value on every rank
    eps = [[e for e in r["teacache"]["eps"] if e is not None] for r in (*ranks, single)]
    assert eps[0] and eps[0] == eps[1]
    assert torch.allclose(torch.tensor(eps[0]), torch.tensor(eps[2]), rtol=1e-4)
