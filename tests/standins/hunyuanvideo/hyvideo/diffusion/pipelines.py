"""The denoising loop of HunyuanVideoPipeline: one DiT call per step, the unconditional and
conditional latents stacked into one batch of 2 when guidance_scale > 1; a flow-matching Euler
scheduler; small deterministic stand-ins for the text encoders and the causal 3D VAE."""

import torch


class FlowMatchDiscreteScheduler:
    def __init__(self, shift=1.0, reverse=True, solver="euler"):
        if solver != "euler":
            raise ValueError(f"Solver {solver} not supported")
        self.shift, self.reverse = shift, reverse

    def set_timesteps(self, num_inference_steps, device=None, n_tokens=None):
        sigmas = torch.linspace(1, 0, num_inference_steps + 1)
        sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        if not self.reverse:
            sigmas = 1 - sigmas
        self.sigmas = sigmas
        self.timesteps = (sigmas[:-1] * 1000).to(device=device, dtype=torch.float32)
        self.step_index = 0

    def step(self, model_output, timestep, sample, return_dict=False):
        dt = self.sigmas[self.step_index + 1] - self.sigmas[self.step_index]
        self.step_index += 1
        return (sample + model_output.float() * dt,)


class TextEncoder:
    """Deterministic hidden states and a padding mask for a prompt."""

    def __init__(self, dim, length, pooled=False):
        self.dim, self.length, self.pooled = dim, length, pooled

    def encode(self, prompts):
        states, masks = [], []
        for prompt in prompts:
            g = torch.Generator().manual_seed(sum(map(ord, prompt)) + len(prompt))
            states.append(torch.randn(self.length, self.dim, generator=g))
            mask = torch.zeros(self.length)
            mask[:min(self.length, len(prompt.split()) + 2)] = 1
            masks.append(mask)
        states, masks = torch.stack(states), torch.stack(masks)
        return (states[:, 0], None) if self.pooled else (states, masks)


class VAE:
    """Latents [B, 16, T, h, w] -> video [B, 3, 4(T-1)+1, 8h, 8w] in [-1, 1]."""

    def decode(self, latents):
        video = torch.tanh(latents[:, :3].float())
        first, rest = video[:, :, :1], video[:, :, 1:].repeat_interleave(4, dim=2)
        video = torch.cat([first, rest], 2)
        return video.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)


class HunyuanVideoPipeline:
    def __init__(self, vae, text_encoder, transformer, scheduler, text_encoder_2=None,
                 progress_bar_config=None, args=None):
        self.vae, self.text_encoder, self.text_encoder_2 = vae, text_encoder, text_encoder_2
        self.transformer, self.scheduler, self.args = transformer, scheduler, args
        self.last_latents = None  # stand-in only: the final latents, for the tests

    def __call__(self, prompt, height, width, video_length, num_inference_steps=50, guidance_scale=7.5,
                 negative_prompt=None, num_videos_per_prompt=1, generator=None, output_type="pil",
                 freqs_cis=None, n_tokens=None, embedded_guidance_scale=None, data_type="video",
                 is_progress_bar=True, vae_ver="88-4c-sd", enable_tiling=False, return_dict=True, **kwargs):
        do_cfg = guidance_scale > 1
        states, mask = self.text_encoder.encode(prompt * num_videos_per_prompt)
        pooled, _ = self.text_encoder_2.encode(prompt * num_videos_per_prompt)
        if do_cfg:
            neg_states, neg_mask = self.text_encoder.encode(negative_prompt * num_videos_per_prompt)
            neg_pooled, _ = self.text_encoder_2.encode(negative_prompt * num_videos_per_prompt)
            states, mask = torch.cat([neg_states, states]), torch.cat([neg_mask, mask])
            pooled = torch.cat([neg_pooled, pooled])
        self.scheduler.set_timesteps(num_inference_steps, n_tokens=n_tokens)
        frames = (video_length - 1) // 4 + 1 if "884" in vae_ver else video_length
        shape = (1, self.transformer.config.in_channels, frames, height // 8, width // 8)
        latents = torch.cat([torch.randn(shape, generator=g) for g in generator])
        for t in self.scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            t_expand = t.repeat(model_input.shape[0])
            guidance = (torch.tensor([embedded_guidance_scale] * model_input.shape[0]) * 1000.0
                        if embedded_guidance_scale is not None else None)
            noise_pred = self.transformer(model_input, t_expand, text_states=states, text_mask=mask,
                                          text_states_2=pooled, freqs_cos=freqs_cis[0], freqs_sin=freqs_cis[1],
                                          guidance=guidance, return_dict=True)["x"]
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
        self.last_latents = latents
        image = latents if output_type == "latent" else self.vae.decode(latents)
        image = (image / 2 + 0.5).clamp(0, 1).cpu().float()
        return [image]
