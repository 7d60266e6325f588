"""Agreement across ranks: ranks whose statistics differ still take one decision (compute if any
rank wants to), so a sharded DiT runs on all ranks or on none."""

import pytest
import torch

from helpers import on_two_ranks


def policy_on_rank(rank, agree):
    """Rank 1 sees inputs that change twice as fast: alone, it would compute more often."""
    from easycache.policies.base import alone
    from easycache.policies.easycache import EasyCachePolicy
    from easycache.runtime.distributed import agree_across_ranks
    policy = EasyCachePolicy(threshold=0.3, warmup_steps=2)
    policy.start_video(12)
    marks = ""
    for step in range(12):
        x = [torch.full((4,), float(step * (1 + rank)))]
        d = policy.decide(step, 0, x, (lambda w: agree_across_ranks(w, x[0].device)) if agree else alone)
        if d.compute:
            policy.record_computed((0, 0), x, [2 * x[0] + 14])
        marks += "C" if d.compute else "R"
    return marks


@pytest.mark.parametrize("agree", [False, True])
def test_agreement_keeps_ranks_with_different_statistics_in_step(tmp_path, agree):
    marks = on_two_ranks(tmp_path, policy_on_rank, agree)
    if agree:
        assert marks[0] == marks[1]
        # the union of the ranks' wishes: rank 1 alone computes more often
        assert marks[0].count("C") >= max(m.count("C") for m in marks)
    else:
        assert marks[0] != marks[1]  # without agreement the ranks would diverge


def extrapolating_policy_on_rank(rank, agree):
    """EasyCache-X on ranks whose statistics favour different estimators (rank 0's output barely
    moves: extrapolating v wins; rank 1's Δ = v - x barely moves: a Δ estimator wins): with the
    runtime's collectives both ranks act on the worst rates, so they choose one estimator and
    take the same decisions."""
    from easycache.policies.base import alone
    from easycache.policies.easycache_x import EasyCacheXPolicy
    from easycache.runtime.distributed import agree_across_ranks, max_across_ranks
    policy = EasyCacheXPolicy(threshold=0.05, warmup_steps=3, gamma=0.5)
    if agree:
        policy.most_cautious = max_across_ranks
    policy.start_video(16)
    marks = []
    for step in range(16):
        s = 1000.0 - 60 * step
        x = [torch.full((4,), s / 1000)]
        policy.locate(step, 0, s)
        d = policy.decide(step, 0, x, (lambda w: agree_across_ranks(w, x[0].device)) if agree else alone)
        if d.compute:
            v = 1 + rank * x[0] + 0.05 * (1 - s / 1000) ** 2
            policy.record_computed((0, 0), x, [v])
        marks.append("C" if d.compute else d.estimator)
    return marks


@pytest.mark.parametrize("agree", [False, True])
def test_ranks_with_different_statistics_choose_one_estimator(tmp_path, agree):
    marks = on_two_ranks(tmp_path, extrapolating_policy_on_rank, agree)
    if agree:
        assert marks[0] == marks[1] and "C" in marks[0][3:-1] and set(marks[0]) == {"C", "v-extrap"}
    else:  # alone, each rank picks its own estimator
        assert set(marks[0][3:-1]) == {"v-extrap"} and set(marks[1][3:-1]) <= {"delta", "delta-extrap"}
