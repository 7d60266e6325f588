"""``Wan2_1_VAE`` with Wan2.2's interface (wan/modules/vae2_1.py upstream), written for the
stand-in: ``.model.z_dim``, ``encode(videos)`` and ``decode(zs)`` on lists of unbatched tensors,
with the real shape rules (a causal 4x temporal stride: frames 1 + 4k <-> latent frames 1 + k,
and the spatial stride) but fixed random channel maps instead of a trained network."""

import types

import torch
import torch.nn.functional as F


class TinyVAE:
    """video [3, 1 + 4k, H, W] in [-1, 1] <-> latent [z_dim, 1 + k, H / s, W / s]."""

    z_dim, stride = 16, (4, 8, 8)

    def __init__(self, z_dim=None, vae_pth=None, dtype=torch.float, device="cpu"):
        self.z_dim = z_dim or self.z_dim
        self.vae_pth, self.dtype, self.device = vae_pth, dtype, device
        self.model = types.SimpleNamespace(z_dim=self.z_dim)
        generator = torch.Generator().manual_seed(self.z_dim)
        self.encoder = torch.randn(self.z_dim, 3, generator=generator)
        self.decoder = torch.randn(3, self.z_dim, generator=generator) / self.z_dim**0.5

    def encode(self, videos):
        out = []
        for video in videos:
            st, sh, sw = self.stride
            pooled = F.avg_pool3d(video[None].float(), kernel_size=(1, sh, sw))[0]  # [3, F, h, w]
            first, rest = pooled[:, :1], pooled[:, 1:]
            if rest.size(1):
                rest = rest.unflatten(1, (-1, st)).mean(2)
            frames = torch.cat([first, rest], dim=1)
            out.append(torch.einsum("zc,cfhw->zfhw", self.encoder.to(frames.device), frames))
        return out

    def decode(self, zs):
        out = []
        for z in zs:
            st, sh, sw = self.stride
            rgb = torch.tanh(torch.einsum("cz,zfhw->cfhw", self.decoder.to(z.device), z.float()))
            rgb = torch.cat([rgb[:, :1], rgb[:, 1:].repeat_interleave(st, dim=1)], dim=1)
            out.append(rgb.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3).clamp_(-1, 1))
        return out


class Wan2_1_VAE(TinyVAE):

    def __init__(self, z_dim=16, vae_pth='cache/vae_step_411000.pth', dtype=torch.float, device="cuda"):
        super().__init__(z_dim, vae_pth, dtype, device)
