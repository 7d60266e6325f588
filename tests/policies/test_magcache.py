"""MagCache (a peer) by hand: accumulated magnitude-ratio error, at most K skips, branches apart."""

import pytest
import torch

from easycache.policies.base import alone
from easycache.policies.magcache import MagCachePolicy, nearest_resample


def marks(policy, steps, branches=1, decisions=None):
    policy.start_video(steps)
    out = []
    for step in range(steps):
        for branch in range(branches):
            d = policy.decide(step, branch, None, alone)
            if decisions is not None:
                decisions.append(d)
            if d.compute:
                policy.record_computed((branch, 0), [torch.zeros(2)], [torch.ones(2)])
            out.append("C" if d.compute else "R")
    return "".join(out)


def test_hand_worked_accumulated_magnitude_error():
    # step 1: ratio .9, err .1 (R); step 2: .81, err .19 -> .29 (R); step 3: .729, +.271 = .56 (C, reset);
    # step 4: .5, err .5 >= .3 (C); step 5: 1.0, err 0 (R). Step 0: first 20% of 6 calls (int 1.2 = 1).
    decisions = []
    policy = MagCachePolicy([1.0, 0.9, 0.9, 0.9, 0.5, 1.0], threshold=0.3, max_skips=2, branches=1)
    assert marks(policy, 6, decisions=decisions) == "CRRCCR"
    assert decisions[2].eps == pytest.approx(0.19) and decisions[2].accumulated == pytest.approx(0.29)


def test_at_most_k_consecutive_skips():
    policy = MagCachePolicy([1.0] * 6, threshold=0.3, max_skips=2, branches=1)
    assert marks(policy, 6) == "CRRCRR"


def test_branches_decide_independently():
    # interleaved ratios: branch 0 stays at 1.0, branch 1 drops to 0.5
    ratios = [1.0, 1.0, 1.0, 0.5, 1.0, 0.5, 1.0, 1.0]
    policy = MagCachePolicy(ratios, threshold=0.3, max_skips=5, retention_ratio=0.25, branches=2)
    # calls 0, 1 (first 25% of 8) forced; step 1: cond err 0 (R), uncond err .5 (C); step 2: R, C; step 3: R, R
    assert marks(policy, 4, branches=2) == "CC" + "RC" + "RC" + "RR"


def test_ratios_are_resampled_to_another_step_count():
    assert nearest_resample([1, 2, 3, 4, 5], 3) == [1, 3, 5]
    # positions 0, .5, 1, 1.5, 2 round half to even, as numpy.round does in the official code
    assert nearest_resample([1, 2, 3], 5) == [1, 1, 2, 3, 3]
    policy = MagCachePolicy([1.0, 1.0, 0.9, 0.8, 0.7, 0.6], branches=2)
    policy.start_video(5)
    assert [r[0] for r in policy.step_ratios] == [1.0, 1.0, 0.9, 0.7, 0.7]  # branch 0: 1.0, 0.9, 0.7


@pytest.mark.parametrize("kwargs", [dict(ratios=[1.0, 0.9, 0.8], branches=2), dict(ratios=[1.0], threshold=-1),
                                    dict(ratios=[1.0], max_skips=-1), dict(ratios=[1.0], retention_ratio=1.5)])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        MagCachePolicy(**{"branches": 1, **kwargs})
