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
