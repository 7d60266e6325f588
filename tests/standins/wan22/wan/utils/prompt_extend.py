"""Names generate.py imports (wan/utils/prompt_extend.py upstream). Prompt extension needs a
language model; the stand-in has none, so building an expander raises."""

from dataclasses import dataclass, field


@dataclass
class PromptOutput:
    status: bool
    prompt: str
    seed: int
    system_prompt: str
    message: str
    extra: dict = field(default_factory=dict)


class PromptExpander:

    def __init__(self, model_name, task, is_vl=False, device=0, **kwargs):
        raise NotImplementedError("stand-in: prompt extension is not available")


class DashScopePromptExpander(PromptExpander):
    pass


class QwenPromptExpander(PromptExpander):
    pass
