"""``T5EncoderModel`` with Wan2.2's constructor and call (wan/modules/t5.py upstream), written
for the stand-in: a tiny random-weight encoder (word hashes -> embeddings -> one residual MLP
block) instead of umT5-XXL. ``self.model`` is the module (moved to and from the device by the
pipelines; FSDP-wrapped through ``shard_fn`` with --t5_fsdp); calling the encoder on a list of
prompts gives one [L_i, text_dim] float32 tensor per prompt, L_i = its word count + 1 (end
token), at most ``text_len``."""

import zlib

import torch
import torch.nn as nn

TEXT_DIM, VOCAB = 16, 97


class _TinyEncoder(nn.Module):

    def __init__(self, dim=TEXT_DIM, vocab=VOCAB, num_layers=1):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
            for _ in range(num_layers))

    def forward(self, ids):
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = x + block(x)
        return x


class T5EncoderModel:

    def __init__(self, text_len, dtype=torch.bfloat16, device=torch.device('cpu'), checkpoint_path=None,
                 tokenizer_path=None, shard_fn=None):
        self.text_len, self.dtype, self.device = text_len, dtype, device
        self.checkpoint_path, self.tokenizer_path = checkpoint_path, tokenizer_path
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            model = _TinyEncoder().eval().requires_grad_(False)
        self.model = shard_fn(model) if shard_fn is not None else model.to(device)

    def tokenize(self, text):
        ids = [zlib.crc32(word.encode()) % (VOCAB - 1) + 1 for word in text.lower().split()][:self.text_len - 1]
        return ids + [0]  # end token

    def __call__(self, texts, device):
        out = []
        with torch.no_grad():
            for text in texts:
                ids = torch.tensor([self.tokenize(text)], dtype=torch.long, device=device)
                out.append(self.model(ids)[0].float())
        return out
