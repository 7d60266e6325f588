"""The calibration run's recorder and the merge of several runs into one calibration file."""

import numpy as np
import pytest
import torch

from easycache.policies.base import alone
from easycache.policies.calibration import MagnitudeRecorder, merge_calibration


def test_recorder_measures_residual_norm_ratios_per_branch():
    rec = MagnitudeRecorder(branches=2)
    rec.start_video(2)
    for step, scale in enumerate((1.0, 2.0)):
        for branch in (0, 1):
            assert rec.decide(step, branch, [torch.tensor([1.0 + step])], alone).compute
            before = torch.zeros(1, 2, 2)
            after = torch.tensor([[[3.0, 4.0], [0.0, 5.0]]]) * scale * (1 + branch)
            rec.record_computed((branch, 0), [before], [after])
    assert rec.ratios == [1.0, 1.0, 2.0, 2.0]  # token norms 5, 5 -> 10, 10 on both branches
    assert rec.indicator_changes == [pytest.approx(1.0)] and rec.output_changes == [pytest.approx(1.0)]


def test_merge_averages_ratios_and_refits_the_polynomial():
    rec = MagnitudeRecorder(branches=1)
    rec.ratios, rec.indicator_changes, rec.output_changes = [1.0, 0.8], [0.1, 0.2, 0.3], [0.2, 0.4, 0.6]
    first = merge_calibration(None, rec)
    assert first["teacache_coefficients"] is None  # a degree-4 fit needs 5 points
    rec.ratios, rec.indicator_changes, rec.output_changes = [1.0, 0.6], [0.4, 0.5], [0.8, 1.0]
    second = merge_calibration(first, rec)
    assert second["videos"] == 2 and second["magcache_ratios"] == pytest.approx([1.0, 0.7])
    fit = np.poly1d(second["teacache_coefficients"])
    assert fit(0.25) == pytest.approx(0.5, abs=1e-6)  # the points lie on y = 2x
    with pytest.raises(ValueError):
        merge_calibration(second, MagnitudeRecorder(branches=1, use_ret_steps=True))
