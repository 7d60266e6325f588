"""Uniform reuse (the baseline every adaptive rule has to beat) by hand."""

import pytest
import torch

from easycache.policies.base import alone
from easycache.policies.uniform import UniformPolicy


def run(policy, steps):
    policy.start_video(steps)
    marks, reasons, outputs = "", [], []
    for step in range(steps):
        x = [torch.full((3,), float(step))]
        d = policy.decide(step, 0, x, alone)
        if d.compute:
            v = [x[0] * 2 + 10]
            policy.record_computed((0, 0), x, v)
        else:
            v = policy.reuse((0, 0), x)
        marks += "C" if d.compute else "R"
        reasons.append(d.reason)
        outputs.append(v[0][0].item())
    return marks, reasons, outputs


def test_every_nth_step_after_the_warmup_and_the_last():
    marks, reasons, outputs = run(UniformPolicy(every=3, warmup_steps=2), 10)
    # steps 0, 1 warm-up; 2, 5, 8 on schedule; 9 last
    assert marks == "CCCRRCRRCC"
    assert reasons[:3] == ["warmup", "warmup", "schedule"] and reasons[-1] == "last"
    # reuse: x_t + (v_i - x_i) with v = 2x + 10: step 3 reuses step 2's delta 2 + 10
    assert outputs[3] == 3 + (2 * 2 + 10 - 2) and outputs[4] == 4 + 12


def test_every_one_computes_everything_and_without_a_delta_it_computes():
    assert run(UniformPolicy(every=1, warmup_steps=0), 6)[0] == "C" * 6
    marks, reasons, _ = run(UniformPolicy(every=4, warmup_steps=0), 6)
    assert marks == "CRRRCC" and reasons[0] == "no-statistic"


@pytest.mark.parametrize("kwargs", [dict(every=0), dict(warmup_steps=-1)])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        UniformPolicy(**kwargs)
