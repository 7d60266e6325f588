"""A small Wan2.1-style text-to-video model trained on procedural captioned videos.

Modules: data (videos + captions), vae (frame autoencoder), text (tiny text encoder),
model (the DiT, Wan2.1's forward contract), sample (flow-matching sampler + pipeline),
checker (prompt-following from pixels), train (training command), evaluate (checker on a model).
"""
