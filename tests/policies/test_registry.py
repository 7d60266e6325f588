"""The registry every command line, adapter and contract test enumerates: each entry is complete
and self-consistent, so a policy added as one file works everywhere."""

import argparse
import inspect

import pytest

from easycache.cli import CliHost, add_cache_flags
from easycache.policies import REGISTRY
from easycache.policies.base import Policy, make_policy

NAMES = sorted(REGISTRY)


def test_every_policy_module_registered_its_policy():
    assert {"easycache", "teacache", "magcache", "deltacache", "uniform"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_a_spec_is_complete(name):
    spec = REGISTRY[name]
    assert issubclass(spec.make, Policy) and spec.make.name == name
    assert spec.make.level in ("model", "blocks")
    accepted = set(inspect.signature(spec.make).parameters)
    for flag in spec.flags:
        assert flag.setting in accepted, (name, flag.setting)
        assert flag.help and flag.name == flag.name.lower().replace("-", "_") or flag.name.endswith("_K")
    for settings in (spec.exact, spec.eager):
        assert set(settings) <= accepted and settings


@pytest.mark.parametrize("name", NAMES)
def test_title_and_settings_from_the_flag_defaults(name):
    spec = REGISTRY[name]
    settings = {flag.setting: flag.default for flag in spec.flags}
    assert name.lower()[:4] in spec.title(settings).lower().replace(" ", "")


def test_flags_of_all_policies_can_live_in_one_parser():
    for kebab in (False, True):
        parser = argparse.ArgumentParser()
        add_cache_flags(parser, CliHost("test", ("a",), {}, "--steps", kebab=kebab))  # a clash would raise
        args = parser.parse_args([])
        assert args.cache == "easycache"


def test_make_policy_by_name_fills_defaults_then_host_defaults():
    policy = make_policy("easycache", {"easycache": {"warmup_steps": 4}}, threshold=0.2)
    assert policy.settings == {"threshold": 0.2, "warmup_steps": 4}
    assert make_policy(None) is None and make_policy(policy) is policy
    with pytest.raises(ValueError, match="unknown cache policy 'nope'; registered: .*easycache"):
        make_policy("nope")
    with pytest.raises(TypeError):
        make_policy(policy, threshold=0.1)
