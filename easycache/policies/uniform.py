"""Uniform reuse, the simplest baseline: compute every n-th step after a warm-up (and the last
step), and in between reuse each branch's transformation vector delta = v - x, as EasyCache
does. It is what a runtime-adaptive rule has to beat at equal speed-up."""

from easycache.policies.base import Agree, Decision, Flag, Policy, PolicySpec, at_least, register
from easycache.policies.easycache import warmup_below_steps


class UniformPolicy(Policy):
    """Memory: one delta per branch."""

    name = "uniform"
    fp32_deltas = True

    def __init__(self, every: int = 2, warmup_steps: int = 10):
        if every < 1 or warmup_steps < 0:
            raise ValueError(f"need every >= 1 and warmup_steps >= 0, got {every}, {warmup_steps}")
        self.every, self.warmup_steps = int(every), int(warmup_steps)
        self.start_video(num_steps=0)

    @property
    def settings(self) -> dict:
        return {"every": self.every, "warmup_steps": self.warmup_steps}

    def decide(self, step: int, branch: int, indicator, agree: Agree) -> Decision:
        # a schedule: the same on every rank, no agreement needed
        if step < self.warmup_steps:
            reason = "warmup"
        elif step >= self.num_steps - 1:
            reason = "last"
        elif not self.has_delta(0):
            reason = "no-statistic"
        elif (step - self.warmup_steps) % self.every == 0:
            reason = "schedule"
        else:
            reason = "reuse"
        return Decision(step, reason != "reuse", reason)


UNIFORM = register(PolicySpec(
    name=UniformPolicy.name,
    summary="uniform reuse (a baseline): compute every n-th step after the warm-up, reuse delta = v - x between",
    make=UniformPolicy,
    title=lambda s: f"Uniform reuse (every {s['every']}, warm-up {s['warmup_steps']})",
    flags=(
        Flag("uniform_every", "every", int, 2, "compute every n-th step after the warm-up", at_least(1)),
        Flag("uniform_warmup", "warmup_steps", int, 10, "warm-up: the first steps are always computed, as is "
             "the last", at_least(0)),
    ),
    prepare=warmup_below_steps,
    exact={"every": 1},
    eager={"every": 3, "warmup_steps": 3},
    knob=("every", (2, 3)),
))
