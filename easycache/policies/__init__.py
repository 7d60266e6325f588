"""The cache policies, one module each. Importing the package imports every module in it, and
each selectable policy registers its spec (name, flags, constructor, report title) in
``REGISTRY``: a new policy is one new file here, and every command line, adapter, the
benchmark and the contract tests pick it up."""

import importlib
import pkgutil

from easycache.policies.base import REGISTRY, Policy, PolicySpec  # noqa: F401 (the package's interface)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
