"""TeaCache (a peer) by hand: the accumulated, polynomial-rescaled change of the indicator."""

import numpy as np
import pytest
import torch

from easycache.adapters.wan21 import WAN21_TEACACHE_COEFFICIENTS
from easycache.policies.base import alone, relative_l1
from easycache.policies.teacache import TeaCachePolicy, polyval

IDENTITY = [1.0, 0.0]  # poly(x) = x: the rescaled indicator is the relative L1 itself


def const(value):
    return [torch.full((4,), float(value))]


def decide_all(policy, values):
    policy.start_video(len(values))
    marks, decisions = "", []
    for step, value in enumerate(values):
        d = policy.decide(step, 0, const(value), alone)
        decisions.append(d)
        if d.compute:
            policy.record_computed((0, 0), const(0), const(1))
        marks += "C" if d.compute else "R"
    return marks, decisions


def test_polyval_and_relative_l1_match_numpy():
    for coefficients in WAN21_TEACACHE_COEFFICIENTS.values():
        for x in (0.0, 0.013, 0.2):
            assert polyval(coefficients, x) == pytest.approx(np.poly1d(coefficients)(x), rel=1e-12)
    assert relative_l1([torch.tensor([3.0, -1.0])], [torch.tensor([2.0, 2.0])]) == pytest.approx((1 + 3) / 4)


def test_relative_l1_summed_over_shards_is_the_whole():
    a, b = torch.tensor([[1.0, -2.0], [3.0, 0.5]]), torch.tensor([[1.5, -2.0], [2.0, 1.0]])
    whole = relative_l1([a], [b])
    assert whole == pytest.approx((0.5 + 0 + 1 + 0.5) / (1.5 + 2 + 2 + 1))
    shards = [torch.stack([(a[i] - b[i]).abs().sum(), b[i].abs().sum()]) for i in range(2)]
    assert relative_l1([a[:1]], [b[:1]], reduce=lambda own: own + shards[1]) == pytest.approx(whole)


def test_hand_worked_decisions_without_ret_steps():
    # relative changes 2/16, 2/18, 2/20, ...: E = .125 (R), .236 (R), .336 >= .25 (C);
    # then 2/22 + 2/24 (R, R) + 2/26 = .2511 >= .25 (C); the last step is forced (C)
    marks, decisions = decide_all(TeaCachePolicy(0.25, IDENTITY), [16, 18, 20, 22, 24, 26, 28, 30])
    assert marks == "CRRCRRCC"
    assert decisions[1].eps == pytest.approx(0.125)
    assert [d.reason for d in decisions][-2:] == ["threshold", "last"]


def test_hand_worked_decisions_with_ret_steps():
    # first 5 steps forced, then 2/24 + 2/26 + 2/28 = .232 < .25 and no forced last step
    policy = TeaCachePolicy(0.25, IDENTITY, use_ret_steps=True)
    assert decide_all(policy, [16, 18, 20, 22, 24, 26, 28, 30])[0] == "CCCCCRRR"
    assert policy.indicator == "modulated-projected" and TeaCachePolicy(0.25, IDENTITY).indicator == "modulated"


def test_rescaling_polynomial_is_applied():
    _, decisions = decide_all(TeaCachePolicy(1.0, [4.0, 0.0, 0.0]), [16, 24, 30, 40])  # 4 x^2
    assert decisions[1].eps == pytest.approx(4 * 0.5**2)


def test_zero_indicator_norm_forces_compute():
    marks, decisions = decide_all(TeaCachePolicy(10.0, IDENTITY), [0, 0, 0, 0])
    assert marks == "CCCC" and decisions[1].reason == "no-statistic"


def test_reuse_adds_the_branch_residual():
    policy = TeaCachePolicy(10.0, IDENTITY)
    policy.start_video(4)
    policy.decide(0, 0, const(1), alone)
    policy.record_computed((0, 0), const(1), const(5))
    policy.record_computed((1, 0), const(1), const(2))
    assert policy.reuse((0, 0), const(10))[0][0].item() == 14 and policy.reuse((1, 0), const(10))[0][0].item() == 11
