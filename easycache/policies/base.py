"""What a cache policy is: the protocol the runtime calls, the decision it returns, the spec
that registers it (name, flags, how it is built, its report title), and the arithmetic the
policies share. A policy is pure tensor math: it never sees a model, only tensors.

Per video the runtime calls ``start_video(num_steps)``. Per DiT call it calls, for a policy that
``uses_timestep``, ``locate(step, branch, timestep)``, then ``decide(step, branch, indicator,
agree)`` -- on every call when ``per_branch`` is true, otherwise on branch 0 only, the other
branches of that step following branch 0's decision -- and then, for each cached part (the whole model, or a segment of blocks), either
``record_computed(key, before, after)`` once the part ran or ``reuse(key, before)`` in its
place. ``key`` is always ``(branch, segment)``; whole-model caching has one segment, 0.
"""

import copy
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

Tensors = Sequence[torch.Tensor]
Key = Tuple[int, int]  # (branch, segment)
Agree = Callable[[bool], bool]  # this process's wish to compute -> the decision every process takes


def alone(wants_compute: bool) -> bool:
    """Agreement in a single process: the wish is the decision."""
    return wants_compute


@dataclass
class Decision:
    """What a policy decided for one step (or one branch of it), with the statistics behind it."""

    step: int
    compute: bool
    reason: str  # warmup | last | no-statistic | threshold | reuse | peer | schedule | calibration
    k: Optional[float] = None
    eps: Optional[float] = None
    accumulated: float = 0.0  # E after this step's update
    groups: Optional[Dict[str, bool]] = None  # per named block group, whether it runs (fixed schedules)
    estimator: Optional[str] = None  # how a reused call is estimated, where a policy has several


class Policy(ABC):
    """A cache policy: decides per DiT call whether to compute, and stores and replays deltas.

    Class attributes tell the runtime how to drive it: ``name``: its name in the registry;
    ``level``: "model" (the whole DiT is skipped; ``before``/``after`` are its input and
    output) or "blocks" (the DiT's head and embeddings run; segments of its blocks are
    replayed). ``indicator``: what ``decide`` is given: "latent" (the DiT input), "modulated"
    (the host's timestep-modulated block input, TeaCache's), "modulated-projected" (its
    projected variant), or "none". ``per_branch``: every CFG branch decides for itself.
    ``fp32_deltas``: deltas are stored and replayed in fp32 instead of the input's dtype.
    ``uses_timestep``: ``locate`` is told the timestep the host passes the DiT on each call.
    """

    name = ""  # the registry's name for it (--cache NAME)
    level = "model"
    indicator = "latent"
    per_branch = False
    fp32_deltas = False
    # set by the runtime when the indicator is a per-rank shard (sequence parallel): sums the
    # partial statistics over the ranks
    reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    uses_timestep = False

    @staticmethod
    def most_cautious(values: torch.Tensor) -> torch.Tensor:
        """The elementwise largest of ``values`` over the ranks, so every rank acts on the same
        statistics (the runtime installs the collective under torch.distributed)."""
        return values

    def locate(self, step: int, branch: int, timestep: Optional[float]) -> None:
        """The call about to be decided: the host's timestep for it (its largest entry), or None
        where the host passes none."""

    def start_video(self, num_steps: int) -> None:
        """Forget everything from the previous video; ``num_steps`` steps follow."""
        self.num_steps = num_steps
        self.deltas: Dict[Key, List[torch.Tensor]] = {}

    @property
    @abstractmethod
    def settings(self) -> dict:
        """The settings, for the report."""

    @abstractmethod
    def decide(self, step: int, branch: int, indicator: Optional[Tensors], agree: Agree) -> Decision:
        """Whether this call computes. ``step`` counts from 0 within the video (within the
        steps this policy serves, when several models share one video)."""

    def record_computed(self, key: Key, before: Tensors, after: Tensors) -> None:
        """The part ran: keep its delta ``after - before``."""
        if self.fp32_deltas:
            self.deltas[key] = [a.detach().float() - b.detach().float() for a, b in zip(after, before)]
        else:
            self.deltas[key] = [a.detach() - b.detach() for a, b in zip(after, before)]

    def reuse(self, key: Key, before: Tensors) -> List[torch.Tensor]:
        """The part's output estimated without running it: ``before + delta``."""
        if self.fp32_deltas:
            return [b.float() + d for b, d in zip(before, self.deltas[key])]
        return [b + d.to(b.dtype) for b, d in zip(before, self.deltas[key])]

    def segments(self, stacks: Sequence[Tuple[str, int]]) -> List[Tuple[int, int, Any]]:
        """Block-level: the cached parts of the model's blocks, numbered on across its block
        stacks ``[(name, number of blocks)]``, as ``[(start, end, mark)]`` (see
        policies.deltacache). By default one cached segment over all of them."""
        return [(0, sum(size for _, size in stacks), True)]

    def has_delta(self, branch: int) -> bool:
        return any(key[0] == branch for key in self.deltas)


# --- the registry: what the command lines, the adapters and the tests enumerate ----------------

@dataclass(frozen=True)
class Flag:
    """A command-line flag setting one keyword of a policy. ``name`` is written in snake case
    without dashes; each host styles it as its own flags are (--ret_steps or --ret-steps).
    ``check(value)`` returns what is wrong with a value ("must be >= 0"), or None."""

    name: str
    setting: str
    type: Callable = float
    default: Any = None
    help: str = ""
    check: Optional[Callable[[Any], Optional[str]]] = None
    switch: bool = False  # a store_true flag


class SettingError(ValueError):
    """A setting (or a combination of settings) a policy cannot run with; the message names
    the flags as the user typed them."""


@dataclass(frozen=True)
class Context:
    """What a policy's ``prepare`` may ask of the host and the run: the number of steps and
    CFG branches, the flag that sets a setting (``flag_of("num_steps")``: the host's step-count
    flag), the host's published constants (``published(policy, setting, settings)``, which
    raises SettingError naming what is missing), and, where one video is served by several
    models (Wan2.2's experts), which ``part`` these settings are for: its steps are
    ``num_steps``, and a calibration file holds one entry per part."""

    num_steps: int
    branches: int
    flag_of: Callable[[str], str]
    published: Callable[[str, str, dict], Any]
    part: Optional[str] = None

    def calibration(self, path: str, flag: str) -> dict:
        """A --calibrate file's entry for these settings (its part's, where it has parts)."""
        data = read_json_setting(path, flag)
        if "experts" not in data:
            if self.part is not None:
                raise SettingError(f"{path} was calibrated without experts; calibrate this model with --calibrate")
            return data
        if self.part not in data["experts"]:
            raise SettingError(f"{path} holds no calibration for {self.part or 'a single model'}")
        return data["experts"][self.part]


@dataclass(frozen=True)
class PolicySpec:
    """A selectable policy: ``--cache <name>`` and its flags on every script, ``make(**settings)``
    for the API. ``title(settings)`` heads the report. ``prepare(settings, context)`` turns the
    flags' values into the settings ``make`` takes (reading files, filling published constants,
    checking combinations), raising SettingError. The contract every host is tested against
    uses two settings: ``exact``, at which the policy computes every call (bitwise the uncached
    run), and ``eager``, at which it skips often even on a tiny random-weight model. ``knob``:
    the setting that trades fidelity for speed, with values from faithful to fast (the
    benchmark sweeps it)."""

    name: str
    summary: str
    make: Callable[..., Policy]
    title: Callable[[dict], str]
    flags: Tuple[Flag, ...] = ()
    prepare: Optional[Callable[[dict, Context], dict]] = None
    exact: Dict[str, Any] = field(default_factory=dict)
    eager: Dict[str, Any] = field(default_factory=dict)
    knob: Optional[Tuple[str, Tuple[Any, ...]]] = None


REGISTRY: Dict[str, PolicySpec] = {}


def register(spec: PolicySpec) -> PolicySpec:
    if spec.name in REGISTRY or spec.name == "none":
        raise ValueError(f"a policy named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def make_policy(policy, host_defaults: Optional[Dict[str, dict]] = None, **settings) -> Optional[Policy]:
    """``policy`` as a Policy: a Policy (or None, the uncached baseline) as is; a registered name
    built from its settings, the flags' defaults and then the host's filling what is not given."""
    if policy is None or isinstance(policy, Policy):
        if settings:
            raise TypeError("settings are given with a policy name, not with a Policy object")
        return policy
    settings = complete_settings(policy, host_defaults, **settings)
    return REGISTRY[policy].make(**settings)


def make_policies(policy, parts: Sequence[Optional[str]], host_defaults: Optional[Dict[str, dict]] = None,
                  per_part: Optional[Dict[str, dict]] = None, **settings) -> Dict[Optional[str], Optional[Policy]]:
    """One policy per part of a pipeline (Wan2.2's experts), never shared: a dict gives each part
    its own, a Policy is copied for each, a registered name makes one each from its settings
    (``per_part``: overrides for one part), None is the baseline for all."""
    if isinstance(policy, dict):
        missing = set(parts) - set(policy)
        if missing:
            raise ValueError(f"no policy for {sorted(missing)}")
        return {part: policy[part] for part in parts}
    if isinstance(policy, Policy):
        return {part: copy.deepcopy(policy) for part in parts}
    return {part: make_policy(policy, host_defaults, **{**settings, **(per_part or {}).get(part, {})})
            for part in parts}


def complete_settings(name: str, host_defaults: Optional[Dict[str, dict]] = None, **settings) -> dict:
    """A registered policy's settings: those given, then the host's defaults, then its flags'."""
    if name not in REGISTRY:
        raise ValueError(f"unknown cache policy {name!r}; registered: {', '.join(sorted(REGISTRY))}")
    merged = {flag.setting: flag.default for flag in REGISTRY[name].flags}
    merged.update((host_defaults or {}).get(name, {}))
    merged.update(settings)
    return merged


def read_json_setting(path: str, flag: str) -> dict:
    """A JSON file named by a flag, or a SettingError saying why it cannot be read."""
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise SettingError(f"{flag} {path}: cannot read it as JSON ({error})") from None


def at_least(minimum):
    def check(value):
        return None if value >= minimum else f"must be >= {minimum}"
    return check


def finite_at_least(minimum):
    def check(value):
        return None if math.isfinite(value) and value >= minimum else f"must be a number >= {minimum}"
    return check


def fraction(value):
    return None if 0 <= value <= 1 else "must lie in [0, 1]"


# --- shared arithmetic (fp32, NaN-safe) --------------------------------------------------------

def mean_abs(tensors: Tensors) -> torch.Tensor:
    """Mean |.| over every element of a list of tensors, in fp32 (a 0-d tensor)."""
    total = sum(u.float().abs().sum() for u in tensors)
    return total / sum(u.numel() for u in tensors)


def mean_abs_diff(a: Tensors, b: Tensors) -> torch.Tensor:
    """Mean |a - b| over every element of two lists of equally shaped tensors, in fp32."""
    total = sum((u.float() - w.float()).abs().sum() for u, w in zip(a, b))
    return total / sum(u.numel() for u in a)


def relative_l1(current: Tensors, previous: Tensors,
                reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
    """mean|current - previous| / mean|previous| over all elements (nan when undefined).
    ``reduce`` sums the two partial sums over the processes that each hold a shard."""
    diff = sum((c.float() - p.float()).abs().sum() for c, p in zip(current, previous))
    norm = sum(p.float().abs().sum() for p in previous)
    if reduce is not None:
        diff, norm = reduce(torch.stack([diff, norm]))
    diff, norm = diff.item(), norm.item()
    return diff / norm if norm > 0 else math.nan


def finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def accumulate(accumulated: float, eps: Optional[float], forced: Optional[str], threshold: float, agree: Agree):
    """The accumulate-and-reset rule of the runtime-adaptive policies: E + eps below the
    threshold reuses, otherwise (or when forced, or when a peer rank asks) compute and reset
    E. Returns (compute, reason, E after this step)."""
    candidate = accumulated + (eps or 0.0)
    wants_compute = forced is not None or candidate >= threshold
    if agree(wants_compute):
        return True, forced or ("threshold" if wants_compute else "peer"), 0.0
    return False, "reuse", candidate
