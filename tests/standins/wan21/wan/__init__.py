"""Stand-in for the Wan2.1 package (https://github.com/Wan-Video/Wan2.1) with the interfaces
easycache_generate.py touches, at a tiny size, runnable on a CPU. Not Wan2.1's code."""

from . import configs
from .pipelines import WanFLF2V, WanI2V, WanT2V, WanVace
