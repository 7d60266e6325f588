"""A small frame autoencoder: the DiT works in its latent space, as Wan's does in its VAE's.

Frames are encoded independently (4x spatial compression, no temporal compression;
the DiT's patch covers two frames instead). Latents are normalised per channel with
statistics measured on data, like Wan's VAE mean/std.
"""

import torch
from torch import nn
import torch.nn.functional as F


class FrameAutoencoder(nn.Module):
    def __init__(self, z_dim: int = 8, width: int = 128):
        super().__init__()
        w = width
        self.z_dim = z_dim
        self.config = dict(z_dim=z_dim, width=width)
        # Space-to-depth first: every layer then runs at the latent resolution, which
        # is cheap and trains in a few minutes on a CPU.
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(4), nn.Conv2d(48, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, z_dim, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(z_dim, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w, 48, 3, padding=1), nn.PixelShuffle(4))
        self.register_buffer("latent_mean", torch.zeros(z_dim))
        self.register_buffer("latent_std", torch.ones(z_dim))

    @staticmethod
    def _frames(video: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = video.shape
        return video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)

    @staticmethod
    def _video(frames: torch.Tensor, b: int) -> torch.Tensor:
        bf, c, h, w = frames.shape
        return frames.reshape(b, bf // b, c, h, w).permute(0, 2, 1, 3, 4)

    def encode_raw(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def _norm(self, z, inverse=False):
        shape = (1, -1, 1, 1, 1)
        m, s = self.latent_mean.view(shape), self.latent_std.view(shape)
        return z * s + m if inverse else (z - m) / s

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> normalised latents [B, z, F, H/4, W/4]."""
        return self._norm(self._video(self.encoder(self._frames(video)), video.shape[0]))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, z, F, h, w] -> [B, 3, F, 4h, 4w] in [-1, 1]."""
        z = self._norm(latents.float(), inverse=True)
        return self._video(self.decoder(self._frames(z)), latents.shape[0]).clamp(-1, 1)

    def loss(self, frames: torch.Tensor, latent_noise: float = 0.05) -> torch.Tensor:
        """Reconstruction loss on [N, 3, H, W]; noise on the code keeps the decoder
        tolerant of the small errors a diffusion model leaves in its latents."""
        z = self.encoder(frames)
        z = z + latent_noise * z.detach().std() * torch.randn_like(z)
        recon = self.decoder(z)
        return F.l1_loss(recon, frames) + F.mse_loss(recon, frames)

    @torch.no_grad()
    def fit_latent_stats(self, videos: torch.Tensor) -> None:
        z = self.encoder(self._frames(videos))
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp_min(1e-4))
