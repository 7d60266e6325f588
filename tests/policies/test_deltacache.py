"""The profiling-based delta cache (a peer) by hand: its published schedules and how a profile of
cached blocks is laid over a model's block stacks."""

import pytest
import torch

from easycache.adapters.hunyuanvideo import HUNYUAN_DOUBLE_CACHED, HUNYUAN_SINGLE_CACHED, HUNYUAN_SINGLE_REFRESH_STEPS
from easycache.adapters.wan21 import WAN21_14B_T2V_FOREGROUND, cached_blocks
from easycache.policies.base import alone
from easycache.policies.deltacache import DeltaCachePolicy, block_segments


def decide_all(policy, steps):
    policy.start_video(steps)
    decisions = []
    for step in range(steps):
        decisions.append(policy.decide(step, 0, None, alone))
    return decisions


def test_published_wan_profile_segments():
    segments = DeltaCachePolicy(cached=cached_blocks(40, WAN21_14B_T2V_FOREGROUND)).segments([("blocks", 40)])
    cached = [(s, e) for s, e, c in segments if c]
    assert cached == [(0, 1), (2, 8), (10, 21), (25, 33), (37, 39)]  # one delta per isolated block or run
    assert sum(e - s for s, e in cached) == 28
    assert [s for s, e, c in segments if not c] == list(WAN21_14B_T2V_FOREGROUND)
    assert [b for s, e, _ in segments for b in range(s, e)] == list(range(40))
    with pytest.raises(ValueError):
        cached_blocks(30, WAN21_14B_T2V_FOREGROUND)
    assert block_segments(3, [1], offset=10, mark="x") == [(10, 11, "x"), (11, 12, False), (12, 13, "x")]


def test_published_wan_schedule_has_14_full_steps_of_50():
    full = [d.step for d in decide_all(DeltaCachePolicy(6, 6), 50) if d.compute]
    assert full == [0, 1, 2, 3, 4, 5, 6, 12, 18, 24, 30, 36, 42, 48]


def test_published_hunyuan_profile_by_hand():
    policy = DeltaCachePolicy(6, 6, cached={"double": HUNYUAN_DOUBLE_CACHED, "single": HUNYUAN_SINGLE_CACHED},
                              stack_refresh_steps={"single": HUNYUAN_SINGLE_REFRESH_STEPS})
    decisions = decide_all(policy, 50)
    double = [d.step for d in decisions if d.compute]
    single = [d.step for d in decisions if d.groups["single"]]
    assert double == [0, 1, 2, 3, 4, 5, 6, 12, 18, 24, 30, 36, 42, 48]
    assert single == [0, 1, 2, 3, 4, 5, 6, 18, 26, 32, 38, 42, 46, 48]
    # double: 6 blocks always run, 14 replayed as one delta; single: 16 always run, 24 in 8 deltas
    segments = policy.segments([("double", 20), ("single", 40)])
    assert [s for s in segments if s[2] is True] == [(6, 20, True)]
    assert len([s for s in segments if s[2] == "single"]) == 8
    assert sum(e - s for s, e, c in segments if c == "single") == 24
    blocks_run = sum((20 if d.compute else 6) + (40 if d.groups["single"] else 16) for d in decisions)
    assert blocks_run == 6 * 60 + (8 * 20 + 36 * 6) + (8 * 40 + 36 * 16) == 1632  # 3000 / 1632 = 1.84x


def test_refresh_schedule_without_warmup_computes_until_it_has_deltas():
    decisions = decide_all(DeltaCachePolicy(0, 4, stack_refresh_steps={"late": [3]}), 6)
    assert [d.compute for d in decisions] == [True, False, False, False, True, False]
    assert [d.groups["late"] for d in decisions] == [True, False, False, True, False, False]
    assert [d.reason for d in decisions][:2] == ["schedule", "reuse"]
    assert DeltaCachePolicy(6, 6).settings == {"warmup_steps": 6, "interval": 6}


def test_a_profile_that_does_not_fit_the_model_is_refused():
    with pytest.raises(ValueError, match="out of range for the 3 blocks of single"):
        DeltaCachePolicy(cached={"single": [0, 5]}).segments([("double", 2), ("single", 3)])
    with pytest.raises(ValueError, match="does not have"):
        DeltaCachePolicy(cached={"blocks": [0]}).segments([("double", 2), ("single", 3)])


def test_segments_replay_their_own_deltas():
    policy = DeltaCachePolicy(1, 4)
    policy.start_video(3)
    policy.record_computed((0, 0), [torch.ones(2)], [torch.full((2,), 3.0)])
    policy.record_computed((1, 0), [torch.ones(2)], [torch.full((2,), 5.0)])
    assert policy.reuse((0, 0), [torch.zeros(2)])[0].tolist() == [2.0, 2.0]
    assert policy.reuse((1, 0), [torch.zeros(2)])[0].tolist() == [4.0, 4.0]
