"""Checks the tinywan tools (demo, benchmark) share: bad input is one line naming the problem,
found before any work starts."""

import math
import os
from typing import Callable, Sequence

from easycache.outputs import folder_problem
from tinywan.text import Tokenizer


def check_number(value: float, flag: str, fail: Callable[[str], None], minimum: float = 0.0) -> None:
    if not (math.isfinite(value) and value >= minimum):
        fail(f"{flag} must be a number >= {minimum:g}, got {value}")


def check_prompts(prompts: Sequence[str], fail: Callable[[str], None]) -> None:
    """tinywan knows its captions' words only; any other word would be read as <unk>, silently."""
    known = set(Tokenizer().words)
    for prompt in prompts:
        unknown = [w for w in prompt.lower().split() if w not in known]
        if not prompt.strip() or unknown:
            what = f"does not know {', '.join(repr(w) for w in unknown)}" if unknown else "needs words"
            fail(f"--prompt {prompt!r}: tinywan {what}; it knows: {' '.join(sorted(known - {'<start>', '<unk>'}))}")


def check_output_folder(out: str, fail: Callable[[str], None]) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        fail(f"--out {out}: not a folder")
    problem = folder_problem(out)
    if problem:
        fail(f"--out {out}: {problem}")


def load_pipeline(path: str, fail: Callable[[str], None]):
    """The tinywan pipeline from a weights file, or one line saying why it cannot be read."""
    from tinywan.sample import TinyWanT2V
    if os.path.isdir(path):
        fail(f"--weights {path} is a folder, expected the .safetensors file")
    if not os.path.isfile(path):
        fail(f"--weights {path} does not exist (the shipped ones are tinywan/weights/tinywan.safetensors)")
    try:
        return TinyWanT2V.from_pretrained(path)
    except Exception as error:  # safetensors and torch raise various types for a corrupt file
        fail(f"--weights {path}: cannot read it as tinywan weights ({type(error).__name__}: {error})".split("\n")[0])
