"""EasyCache for video diffusion transformers: cache policies (``easycache.policies``), the
model-agnostic runtime that wraps a host's DiT (``easycache.runtime``), one adapter per host
(``easycache.adapters``), the command-line helpers the drop-in scripts share
(``easycache.cli``) and the fidelity metrics (``easycache.metrics``)."""
