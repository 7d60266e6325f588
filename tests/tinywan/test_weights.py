"""The shipped tinywan weights: intact, and sampling them reproduces what was recorded when they were made."""

import json
import os

import pytest
import torch

from helpers import ROOT
from tinywan.record_check import sample_latents, sha256

WEIGHTS = os.path.join(ROOT, "tinywan", "weights", "tinywan.safetensors")
CHECK = os.path.join(ROOT, "tinywan", "weights", "tinywan.check.json")


def test_weights_file_matches_its_recorded_checksum():
    with open(CHECK) as f:
        assert sha256(WEIGHTS) == json.load(f)["sha256"]
    assert os.path.getsize(WEIGHTS) <= 20 * 2**20


def test_sampling_is_deterministic_and_matches_the_record():
    with open(CHECK) as f:
        record = json.load(f)
    first, second = sample_latents(WEIGHTS), sample_latents(WEIGHTS)
    assert torch.equal(first, second)
    # other CPUs may round differently in the last bits: compare with a tolerance
    assert first.flatten()[:16].tolist() == pytest.approx(record["latents_first"], rel=1e-3, abs=1e-4)
    assert first.abs().mean().item() == pytest.approx(record["latents_mean_abs"], rel=1e-4)
