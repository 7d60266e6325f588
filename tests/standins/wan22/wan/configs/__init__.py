"""Task and size tables with Wan2.2's names and keys (wan/configs/__init__.py upstream).

The VAE strides and the patch size are Wan2.2's ((4, 8, 8) for A14B, (4, 16, 16) for TI2V-5B;
patch (1, 2, 2)), so the latent shapes follow the real rules; instead the sizes are tiny. Each
key keeps its real name and orientation (width*height) but maps to a small (width, height), a
multiple of 32 pixels, so a 5-frame video is a few dozen latent tokens. ``MAX_AREA_CONFIGS``
holds the products of those tiny sizes.
"""

from .shared_config import AttrDict
from .wan_animate_14B import animate_14B
from .wan_i2v_A14B import i2v_A14B
from .wan_s2v_14B import s2v_14B
from .wan_t2v_A14B import t2v_A14B
from .wan_ti2v_5B import ti2v_5B

WAN_CONFIGS = {
    't2v-A14B': t2v_A14B,
    'i2v-A14B': i2v_A14B,
    'ti2v-5B': ti2v_5B,
    'animate-14B': animate_14B,
    's2v-14B': s2v_14B,
}

# key (real width*height) -> tiny (width, height)
SIZE_CONFIGS = {
    '720*1280': (32, 64),
    '1280*720': (64, 32),
    '480*832': (32, 48),
    '832*480': (48, 32),
    '704*1280': (64, 128),
    '1280*704': (128, 64),
    '1024*704': (96, 64),
    '704*1024': (64, 96),
}

MAX_AREA_CONFIGS = {key: width * height for key, (width, height) in SIZE_CONFIGS.items()}

SUPPORTED_SIZES = {
    't2v-A14B': ('720*1280', '1280*720', '480*832', '832*480'),
    'i2v-A14B': ('720*1280', '1280*720', '480*832', '832*480'),
    'ti2v-5B': ('704*1280', '1280*704'),
    's2v-14B': ('720*1280', '1280*720', '480*832', '832*480', '1024*704', '704*1024', '704*1280', '1280*704'),
    'animate-14B': ('720*1280', '1280*720'),
}
