"""The EasyCache policy on synthetic trajectories whose decisions are worked out by hand, and
against an independent transcription of the official rule."""

import math

import pytest
import torch

from easycache.policies.base import alone, mean_abs, mean_abs_diff
from easycache.policies.easycache import EasyCachePolicy


def const(value, n=4, dtype=torch.float32):
    return [torch.full((n,), float(value), dtype=dtype)]


def run(policy, num_steps, x_of, v_of, branches=1, decisions=None):
    """Drive the policy like the runtime: x_of(step) is the input, v_of(step, branch, x) the
    model; branch 0 decides, the others follow. Returns decisions (C/R), the outputs and how
    often the model ran; ``decisions`` collects the Decision objects."""
    policy.start_video(num_steps)
    marks, outputs, model_calls = "", [], 0
    for step in range(num_steps):
        x = x_of(step)
        decision = policy.decide(step, 0, x, alone)
        if decisions is not None:
            decisions.append(decision)
        marks += "C" if decision.compute else "R"
        for branch in range(branches):
            if decision.compute:
                v = v_of(step, branch, x)
                model_calls += 1
                policy.record_computed((branch, 0), x, v)
            else:
                v = policy.reuse((branch, 0), x)
            outputs.append(v[0][0].item())
    return marks, outputs, model_calls


def test_mean_abs_pools_all_elements_of_all_tensors():
    a = [torch.tensor([1.0, -3.0]), torch.tensor([[2.0, 0.0, -2.0]])]
    b = [torch.tensor([0.0, 0.0]), torch.tensor([[0.0, 1.0, 0.0]])]
    assert mean_abs(a).item() == pytest.approx((1 + 3 + 2 + 0 + 2) / 5)
    assert mean_abs_diff(a, b).item() == pytest.approx((1 + 3 + 2 + 1 + 2) / 5)


def test_hand_worked_trajectory_accumulates_and_resets():
    # x_t = t, v = 2x + 14. Warm-up steps 0, 1: k = (16-14)/(1-0) = 2, |v_1| = 16,
    # so eps = 2 * 1 / 16 = 0.125 per step: E = .125 (R), .25 (R), .375 >= tau (C, E = 0).
    # At step 4: k = (22-16)/(4-1) = 2, |v_4| = 22: eps = 1/11, E = .09 (R), .18 (R); 7 is last (C).
    policy = EasyCachePolicy(threshold=0.375, warmup_steps=2)
    decisions = []
    marks, outputs, calls = run(policy, 8, const, lambda s, b, x: [2 * x[0] + 14], decisions=decisions)
    assert marks == "CCRRCRRC"
    assert calls == 4
    # reused output = x_t + (v_i - x_i) of the last computed step i
    assert outputs == [14, 16, 2 + 15, 3 + 15, 22, 5 + 18, 6 + 18, 28]
    reasons = [d.reason for d in decisions]
    assert reasons == ["warmup", "warmup", "reuse", "reuse", "threshold", "reuse", "reuse", "last"]
    assert [d.eps for d in decisions][2:4] == [0.125, 0.125]
    assert decisions[5].eps == pytest.approx(2 / 22)
    assert decisions[6].accumulated == pytest.approx(4 / 22)


def test_rate_uses_the_two_most_recent_computed_steps_not_adjacent_ones():
    # v = x^2 + 1 with x_t = t.
    policy = EasyCachePolicy(threshold=0.9, warmup_steps=2)
    decisions = []
    # after warm-up: k = (2-1)/1 = 1, |v_1| = 2, eps = 0.5: E = .5 (R), 1.0 (C at step 3)
    marks, _, _ = run(policy, 6, const, lambda s, b, x: [x[0] ** 2 + 1], decisions=decisions)
    assert marks == "CCRCRC"
    # step 3 computed: k = (10 - 2) / (3 - 1) = 4; |v_3| = 10; step 4: eps = 4 * 1 / 10
    assert decisions[4].k == pytest.approx(4.0)
    assert decisions[4].eps == pytest.approx(0.4)


def test_input_change_is_between_consecutive_steps_even_when_reused():
    # x jumps 0,1,2,4,... so the change at step 3 is 2 (from step 2, a reused step), not 3 (from step 1).
    xs = [0, 1, 2, 4, 5]
    policy = EasyCachePolicy(threshold=10.0, warmup_steps=2)
    decisions = []
    run(policy, 5, lambda s: const(xs[s]), lambda s, b, x: [2 * x[0] + 14], decisions=decisions)
    # k = 2, |v_1| = 16: eps_3 = 2 * 2 / 16
    assert decisions[3].eps == pytest.approx(0.25)


def test_each_branch_reuses_its_own_delta():
    policy = EasyCachePolicy(threshold=1.0, warmup_steps=2)
    marks, outputs, calls = run(policy, 4, const,
                                lambda s, b, x: [2 * x[0] + 14 + 100 * b], branches=2)
    assert marks == "CCRC"
    assert calls == 6
    step2 = outputs[4:6]
    assert step2 == [2 + (16 - 1), 2 + (116 - 1)]


def test_warmup_and_last_step_always_computed_and_zero_threshold_always_computes():
    policy = EasyCachePolicy(threshold=100.0, warmup_steps=3)
    marks, _, _ = run(policy, 7, const, lambda s, b, x: [2 * x[0] + 14])
    assert marks == "CCCRRRC"
    policy = EasyCachePolicy(threshold=0.0, warmup_steps=0)
    marks, _, _ = run(policy, 7, const, lambda s, b, x: [2 * x[0] + 14])
    assert marks == "C" * 7


def test_zero_input_change_never_divides_by_zero():
    # constant input: k = 0/0 is undefined, so every step after warm-up is computed
    policy = EasyCachePolicy(threshold=1.0, warmup_steps=1)
    decisions = []
    marks, _, _ = run(policy, 5, lambda s: const(3.0), lambda s, b, x: [x[0] + s], decisions=decisions)
    assert marks == "CCCCC"
    assert {d.reason for d in decisions[1:-1]} == {"no-statistic"}
    assert all(d.k is None for d in decisions)


def test_zero_output_norm_forces_compute():
    policy = EasyCachePolicy(threshold=1.0, warmup_steps=2)
    decisions = []
    marks, _, _ = run(policy, 5, const, lambda s, b, x: [torch.zeros_like(x[0])], decisions=decisions)
    assert marks == "CCCCC"
    assert decisions[2].reason == "no-statistic"


def test_non_finite_statistic_forces_compute():
    xs = [0.0, 1.0, 2.0, math.nan, 4.0, 5.0, 6.0]
    policy = EasyCachePolicy(threshold=10.0, warmup_steps=2)
    decisions = []
    marks, _, _ = run(policy, 7, lambda s: const(xs[s]), lambda s, b, x: [2 * x[0] + 14], decisions=decisions)
    assert marks[3] == "C"
    assert decisions[3].reason == "no-statistic"
    assert decisions[3].eps is None


def test_agreement_can_force_a_compute_and_resets_the_accumulator():
    policy = EasyCachePolicy(threshold=10.0, warmup_steps=2)
    policy.start_video(5)
    for step in range(2):
        policy.decide(step, 0, const(step), alone)
        policy.record_computed((0, 0), const(step), [2 * const(step)[0] + 14])
    d = policy.decide(2, 0, const(2), lambda wants: True)
    assert (d.compute, d.reason, d.accumulated) == (True, "peer", 0.0)
    d = policy.decide(3, 0, const(3), alone)
    assert (d.compute, d.accumulated) == (False, 0.125)


def test_state_is_reset_per_video():
    def video(seed):
        g = torch.Generator().manual_seed(seed)
        steps = torch.randn(12, 8, generator=g).cumsum(0)
        return (lambda s: [steps[s]]), (lambda s, b, x: [torch.tanh(x[0]) * 3 + s])

    fresh = EasyCachePolicy(threshold=0.3, warmup_steps=3)
    expected = run(fresh, 12, *video(0))
    reused = EasyCachePolicy(threshold=0.3, warmup_steps=3)
    run(reused, 12, *video(1))
    assert run(reused, 12, *video(0)) == expected
    assert "R" in expected[0]


def test_statistics_and_deltas_are_fp32_for_half_precision_inputs():
    policy = EasyCachePolicy(threshold=1.0, warmup_steps=1)
    policy.start_video(3)
    x = const(1.0, dtype=torch.bfloat16)
    policy.decide(0, 0, x, alone)
    policy.record_computed((0, 0), x, [x[0] * 3])
    assert policy.deltas[(0, 0)][0].dtype == torch.float32
    assert policy.reuse((0, 0), x)[0].dtype == torch.float32


@pytest.mark.parametrize("kwargs", [dict(threshold=-0.1), dict(threshold=math.inf), dict(warmup_steps=-1)])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        EasyCachePolicy(**kwargs)


def official_reference(num_steps, warmup, thresh, xs, model):
    """The official EasyCache Wan2.1 rule, transcribed independently as a call-count
    loop over cond/uncond pairs, with its own bookkeeping (no shared code)."""
    decisions, acc, k = [], 0.0, None
    prev_in = prev_out = prev_prev_in = None
    for step in range(num_steps):
        x = xs[step]
        if step < warmup or step >= num_steps - 1:
            calc, acc = True, 0.0
        elif prev_in is not None and prev_out is not None and k is not None:
            acc += k * (x - prev_in).abs().mean().item() / prev_out.abs().mean().item()
            calc = acc >= thresh
            if calc:
                acc = 0.0
        else:
            calc = True
        prev_in = x
        if calc:
            v = model(x)
            if prev_out is not None and prev_prev_in is not None:
                k = (v - prev_out).abs().mean().item() / (prev_in - prev_prev_in).abs().mean().item()
            prev_prev_in, prev_out = prev_in, v
        decisions.append("C" if calc else "R")
    return "".join(decisions)


@pytest.mark.parametrize("seed", range(4))
def test_matches_an_independent_transcription_of_the_official_rule(seed):
    g = torch.Generator().manual_seed(seed)
    n = 30
    xs = list(torch.randn(n, 64, generator=g).mul(0.1).cumsum(0) + torch.randn(64, generator=g))
    weight = torch.randn(64, 64, generator=g) / 8

    def model(x):
        return torch.tanh(x @ weight) + 0.5 * x

    for threshold in (0.08, 0.15, 0.25):
        policy = EasyCachePolicy(threshold=threshold, warmup_steps=4)
        marks, _, _ = run(policy, n, lambda s: [xs[s]], lambda s, b, x: [model(x[0])])
        assert marks == official_reference(n, 4, threshold, xs, model)
    assert marks.count("R") > 10 and "RR" in marks
