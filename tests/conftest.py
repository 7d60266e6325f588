"""Paths, the stand-in checkouts and the per-test hygiene every test shares. The helpers tests
import are in helpers.py (CLI runner, two-rank runner) and hosts.py (the hosts the contract
matrix drives)."""

import os
import sys

import pytest
import torch

torch.set_num_threads(1)  # two threads on a shared 2-core machine can be 5-10x slower

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for path in (ROOT, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(autouse=True)
def grad_mode_on():
    """HunyuanVideo's sampler turns autograd off process-wide (the stand-in mirrors it), also when
    a module-scoped fixture builds one: every test starts as a fresh process would."""
    torch.set_grad_enabled(True)
    yield
    torch.set_grad_enabled(True)


@pytest.fixture(scope="session")
def wan21_script():
    """The shipped Wan2.1 script, imported as a user's ``from easycache_generate import ...`` does."""
    from helpers import WAN21_SCRIPT, load_script
    return load_script(WAN21_SCRIPT, "easycache_generate")


@pytest.fixture(scope="session")
def wan21_generate():
    """The stand-in Wan2.1 checkout's generate.py (its wan/ importable by name)."""
    from helpers import WAN21_STANDIN
    if WAN21_STANDIN not in sys.path:
        sys.path.insert(0, WAN21_STANDIN)
    import generate
    assert os.path.dirname(generate.__file__) == WAN21_STANDIN
    return generate


@pytest.fixture(scope="session")
def hunyuan_script():
    from helpers import HUNYUAN_SCRIPT, load_script
    return load_script(HUNYUAN_SCRIPT, "easycache_sample_video")


@pytest.fixture(scope="session")
def hunyuan_sample_video():
    """The stand-in HunyuanVideo checkout's sample_video.py (its hyvideo/ importable by name)."""
    from helpers import HUNYUAN_STANDIN
    if HUNYUAN_STANDIN not in sys.path:
        sys.path.insert(0, HUNYUAN_STANDIN)
    import sample_video
    assert os.path.dirname(sample_video.__file__) == HUNYUAN_STANDIN
    return sample_video
