"""EasyCache-X on hand-worked trajectories: the estimators, the self-calibrated rate, the choice
between estimators, and the accumulate-and-reset rule, all with numbers worked by hand."""

import math

import pytest
import torch

from easycache.policies.base import alone
from easycache.policies.easycache_x import EasyCacheXPolicy, estimate


def scalar(value):
    return [torch.tensor([float(value)])]


def computed(s, x, v):
    return (float(s), scalar(x), scalar(v))


def test_the_estimators_by_hand():
    # v(s) = 5 s - 2 at s = 1.0 and 0.8 (v = 3, 2), x = 0.5 s; predicting s = 0.6
    older, newer = computed(1.0, 0.5, 3.0), computed(0.8, 0.4, 2.0)
    x_t = scalar(0.3)
    # w = gamma (0.6 - 0.8) / (0.8 - 1.0) = gamma
    assert estimate("v-extrap", 1.0, 0.6, x_t, newer, older)[0].item() == pytest.approx(1.0)  # the line: exact
    assert estimate("v-extrap", 0.5, 0.6, x_t, newer, older)[0].item() == pytest.approx(1.5)
    assert estimate("v", 0.5, 0.6, x_t, newer, older)[0].item() == pytest.approx(2.0)
    # delta = v - x: 2.5 at s = 1, 1.6 at s = 0.8
    assert estimate("delta", 0.5, 0.6, x_t, newer, older)[0].item() == pytest.approx(0.3 + 1.6)
    assert estimate("delta-extrap", 0.5, 0.6, x_t, newer, older)[0].item() == pytest.approx(0.3 + 1.6 + 0.5 * -0.9)
    # with one computed step the extrapolations fall back to reuse
    assert estimate("v-extrap", 0.5, 0.6, x_t, newer)[0].item() == pytest.approx(2.0)
    assert estimate("delta-extrap", 0.5, 0.6, x_t, newer)[0].item() == pytest.approx(1.9)


def drive(policy, model, timesteps, branches=1, x_of=lambda s: 0.0):
    """Run the policy through one video as the runtime does; returns per step (computed, reason,
    estimator, output of branch 0) and checks nothing else."""
    policy.start_video(len(timesteps))
    rows = []
    for step, s in enumerate(timesteps):
        outputs = []
        for branch in range(branches):
            policy.locate(step, branch, s)
            if branch == 0:
                decision = policy.decide(step, 0, None, alone)
            x = scalar(x_of(s))
            if decision.compute:
                v = scalar(model(s, x[0].item(), branch))
                policy.record_computed((branch, 0), x, v)
            else:
                v = policy.reuse((branch, 0), x)
            outputs.append(v[0].item())
        rows.append((decision.compute, decision.reason, decision.estimator, outputs[0], decision.eps))
    return rows


def test_a_worked_video_rate_choice_and_accumulation():
    """x = 0, v at s = 1000, 900, 800 is 1, 2, 4 (the warm-up). At s = 800 each estimator predicts
    from the two before: delta 2 (error 2/4 = 0.5 over a gap of 100: rate 0.005), both damped
    extrapolations 2 + 0.5 * 1 = 2.5 (error 0.375, rate 0.00375): a tie, the earlier,
    delta-extrap, is chosen. s = 700: eps = 0.00375 * 100 = 0.375 < 0.5, reuse: 4 + 0.5 * (4 - 2)
    = 5. s = 600: eps = 0.00375 * 200 = 0.75, E = 1.125 >= 0.5: compute. The last step (500, v = 8)
    is measured from 800 and 600: delta 7 (rate 1/8/100), the extrapolations 7 + 0.25 * 3 = 7.75."""
    values = {1000: 1.0, 900: 2.0, 800: 4.0, 700: 99.0, 600: 7.0, 500: 8.0}
    policy = EasyCacheXPolicy(threshold=0.5, warmup_steps=3, gamma=0.5)
    rows = drive(policy, lambda s, x, b: values[s], [1000, 900, 800, 700, 600, 500])
    assert [r[1] for r in rows] == ["warmup"] * 3 + ["reuse", "threshold", "last"]
    assert rows[3][2] == "delta-extrap" and rows[3][3] == pytest.approx(5.0)
    assert rows[3][4] == pytest.approx(0.375) and rows[4][4] == pytest.approx(0.75)
    assert policy.rates[0] == pytest.approx([0.00125, 0.0003125, 0.0003125])


def test_a_constant_delta_makes_delta_reuse_win():
    """v = x + 2 with x moving: Δ is constant, so Δ reuse (and its extrapolation, tied) is exact,
    while extrapolating v is not; the choice is Δ reuse and every reused output is exact."""
    policy = EasyCacheXPolicy(threshold=0.5, warmup_steps=3)
    timesteps = [1000, 950, 850, 700, 600, 500, 400, 300]
    rows = drive(policy, lambda s, x, b: x + 2.0, timesteps, x_of=lambda s: (s / 1000) ** 2)
    reused = [(r, s) for r, s in zip(rows, timesteps) if not r[0]]
    assert reused and all(r[2] == "delta" and r[3] == pytest.approx((s / 1000) ** 2 + 2.0) for r, s in reused)
    assert policy.rates[0][0] == 0.0 and policy.rates[0][2] > 0


def test_a_constant_output_makes_extrapolating_v_win():
    """v constant, x moving: v extrapolation (w times a zero difference) is exact, Δ reuse is not."""
    policy = EasyCacheXPolicy(threshold=0.5, warmup_steps=3)
    timesteps = [1000, 950, 850, 700, 600, 500, 400, 300]
    rows = drive(policy, lambda s, x, b: 3.0, timesteps, x_of=lambda s: (s / 1000) ** 2)
    reused = [r for r in rows if not r[0]]
    assert reused and all(r[2] == "v-extrap" and r[3] == pytest.approx(3.0) for r in reused)
    assert policy.rates[0][2] == 0.0 and min(policy.rates[0][:2]) > 0


def test_a_trajectory_linear_in_sigma_is_extrapolated_exactly_and_reused_to_the_end():
    """v = 2 - 0.003 s with gamma = 1: the undamped line predicts every step exactly, so the rate
    is 0, eps 0, and every step after the warm-up but the last is reused, exactly."""
    policy = EasyCacheXPolicy(threshold=0.01, warmup_steps=3, gamma=1.0, estimator="v-extrap")
    timesteps = [1000, 900, 750, 600, 450, 300, 150, 50]
    rows = drive(policy, lambda s, x, b: 2 - 0.003 * s, timesteps, x_of=lambda s: s / 1000)
    assert [r[0] for r in rows] == [True] * 3 + [False] * 4 + [True]
    assert all(r[3] == pytest.approx(2 - 0.003 * s, abs=1e-5) for r, s in zip(rows, timesteps))


def test_the_worst_branch_drives_the_decision():
    """Branch 0 is a line (rate 0 for v-extrap at gamma 1); branch 1 bends, so the decision follows
    its rate: the step after the warm-up is computed although branch 0 alone would reuse it."""
    line = lambda s, x, b: 1 - s / 1000 if b == 0 else (1 - s / 1000) ** 3  # noqa: E731
    policy = EasyCacheXPolicy(threshold=1e-3, warmup_steps=3, gamma=1.0)
    rows = drive(policy, line, [1000, 800, 600, 400, 200, 100], branches=2)
    assert rows[3][:2] == (True, "threshold")
    assert policy.rates[0][2] == pytest.approx(0.0, abs=1e-6) and policy.rates[1][2] > 1e-4


def test_a_zero_output_forces_a_compute_instead_of_dividing_by_zero():
    policy = EasyCacheXPolicy(threshold=10.0, warmup_steps=3)
    rows = drive(policy, lambda s, x, b: 0.0, [1000, 900, 800, 700, 600])
    assert rows[3][:2] == (True, "no-statistic") and policy.rates[0] is None


def test_without_a_timestep_the_step_index_is_the_abscissa():
    policy = EasyCacheXPolicy(threshold=0.5, warmup_steps=3)
    policy.start_video(5)
    policy.locate(2, 0, None)
    assert policy.position[0] == 2.0


@pytest.mark.parametrize("settings,message", [
    ({"threshold": math.nan}, "threshold"), ({"warmup_steps": -1}, "warmup_steps"),
    ({"gamma": 1.5}, "gamma"), ({"estimator": "quadratic"}, "estimator")])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        EasyCacheXPolicy(**settings)
