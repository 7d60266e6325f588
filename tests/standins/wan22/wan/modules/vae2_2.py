"""``Wan2_2_VAE`` with Wan2.2's interface (wan/modules/vae2_2.py upstream), written for the
stand-in: 48 latent channels and a (4, 16, 16) stride, as TI2V-5B's VAE has."""

import torch

from .vae2_1 import TinyVAE


class Wan2_2_VAE(TinyVAE):

    stride = (4, 16, 16)

    def __init__(self, z_dim=48, c_dim=160, vae_pth=None, dim_mult=[1, 2, 4, 4],
                 temperal_downsample=[False, True, True], dtype=torch.float, device="cuda"):
        super().__init__(z_dim, vae_pth, dtype, device)
