"""Stand-in for the Wan2.2 package (https://github.com/Wan-Video/Wan2.2) with the interfaces the
EasyCache drop-in touches, at a tiny size, runnable on a CPU. Written for this project; not
Wan2.2's code."""

from . import configs, distributed, modules
from .animate import WanAnimate
from .image2video import WanI2V
from .speech2video import WanS2V
from .text2video import WanT2V
from .textimage2video import WanTI2V
