import importlib.util
import os
import sys

import pytest
import torch

torch.set_num_threads(1)  # two threads on a shared 2-core machine can be 5-10x slower

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAN_STANDIN = os.path.join(ROOT, "tests", "wan21_standin")
sys.path.insert(0, ROOT)


def load_script(relative_path: str, name: str):
    """Import a drop-in script by path, as a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def wan_script():
    return load_script("wan2_1/easycache_generate.py", "easycache_generate")


@pytest.fixture(scope="session")
def wan_standin():
    """The stand-in Wan2.1 checkout's modules (generate, wan), importable by their names."""
    if WAN_STANDIN not in sys.path:
        sys.path.insert(0, WAN_STANDIN)
    import generate
    import wan
    assert os.path.dirname(generate.__file__) == WAN_STANDIN
    return generate, wan


@pytest.fixture(autouse=True)
def restore_grad_mode():
    """HunyuanVideo's sampler turns autograd off process-wide (the stand-in mirrors it): keep
    that from leaking into later tests."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


def end_worker() -> None:
    """End a spawned rank once its results are written. Leaving through interpreter
    teardown can abort in gloo's thread destructors ("terminate called without an active
    exception") after the work is done, which mp.spawn reports as a failure."""
    import torch.distributed as dist
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
