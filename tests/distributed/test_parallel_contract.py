"""The contract under the hosts' own multi-process paths, two gloo ranks: Wan2.1's and Wan2.2's FSDP +
sequence parallel (each Wan2.2 expert wrapped and sharded), HunyuanVideo's xDiT sequence parallel,
diffusers' own context parallelism (Ulysses; whole-model policies: the block-level ones are refused
there). For every registered policy (eager settings) and
the calibration run, both ranks take the same decision at every call, the report says so, what
reached the DiT equals the report, and, since every one of these paths really shards the tokens,
the decisions and the video equal those of one process."""

import pytest
import torch

from easycache.policies import REGISTRY
from easycache.policies.calibration import MagnitudeRecorder
from helpers import on_two_ranks
from hosts import HOSTS, required_settings

NAMES = sorted(REGISTRY)
PARALLEL_HOSTS = [host for host in HOSTS if host.parallel]


def names_for(host):
    return [n for n in NAMES if REGISTRY[n].make.level in host.parallel_levels] + (
        ["calibrate"] if "blocks" in host.parallel_levels else [])


def run_every_policy(host, make):
    results = {}
    for name in names_for(host):
        pipe = make()
        calls, blocks = host.count_dit_calls(pipe), host.count_block_runs(pipe)
        if name == "calibrate":
            cache = host.enable(pipe, MagnitudeRecorder(host.branches))
        else:
            spec = REGISTRY[name]
            cache = host.enable(pipe, name, **required_settings(host, spec), **spec.eager)
        latents = host.video(pipe)
        report = cache.report()
        results[name] = {"computed": [c["computed"] for c in report["calls"]], "calls": len(calls),
                         "blocks": len(blocks), "blocks_run": report.get("blocks_run"),
                         "agree": report["ranks_agree"], "world": report["world_size"],
                         "latents": latents.flatten()[:32].tolist()}
    return results


def rank_main(rank, host_name):
    host = next(h for h in HOSTS if h.name == host_name)
    parallel = host.make_parallel(rank)
    for dit in host.dits(parallel).values():  # the host's own parallel forward, FSDP, or diffusers' CP
        assert "forward" in dit.__dict__ or type(dit).__name__ == "FullyShardedDataParallel" or dit._parallel_config
    return run_every_policy(host, lambda: host.make_parallel(rank))


@pytest.mark.parametrize("host", PARALLEL_HOSTS, ids=lambda host: host.name)
def test_ranks_take_identical_decisions_under_the_hosts_parallel_path(tmp_path, host):
    ranks = on_two_ranks(tmp_path, rank_main, host.name)
    single = run_every_policy(host, host.make)
    for name in names_for(host):
        mine, other = ranks[0][name], ranks[1][name]
        assert mine["computed"] == other["computed"] and mine["agree"] is other["agree"] is True, name
        assert mine["world"] == 2 and mine["latents"] == other["latents"], name
        level = "blocks" if name == "calibrate" else REGISTRY[name].make.level
        if level == "model":
            assert mine["calls"] == sum(mine["computed"]), name
        else:
            assert mine["blocks"] == mine["blocks_run"], name
        if name != "calibrate":
            assert sum(mine["computed"]) < len(mine["computed"]), name
        # the stand-ins and diffusers really shard the tokens: two ranks decide as one process does
        assert mine["computed"] == single[name]["computed"], name
        assert mine["blocks_run"] == single[name]["blocks_run"], name
        assert torch.allclose(torch.tensor(mine["latents"]), torch.tensor(single[name]["latents"]), atol=1e-4), name
