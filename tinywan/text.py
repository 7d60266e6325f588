"""A tiny text encoder over the caption vocabulary, standing in for Wan's umT5.

Like umT5 it returns one feature vector per token ([L, C], unbatched, in a list);
the DiT's own text embedding maps them to its width. The empty prompt encodes to the
single start token, which serves as the unconditional (negative) prompt.
"""

from typing import List

import torch
from torch import nn

from tinywan import data

SPECIALS = ["<start>", "<unk>"]


class Tokenizer:
    def __init__(self, words: List[str] = None):
        self.words = SPECIALS + (words or data.vocabulary())
        self.index = {w: i for i, w in enumerate(self.words)}

    def __call__(self, text: str) -> List[int]:
        unk = self.index["<unk>"]
        return [0] + [self.index.get(w, unk) for w in text.lower().split()]


class TextEncoder(nn.Module):
    def __init__(self, dim: int = 128, layers: int = 2, heads: int = 4, max_len: int = 32):
        super().__init__()
        self.tokenizer = Tokenizer()
        self.config = dict(dim=dim, layers=layers, heads=heads, max_len=max_len)
        self.dim, self.max_len = dim, max_len
        self.embed = nn.Embedding(len(self.tokenizer.words), dim)
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, texts: List[str]) -> List[torch.Tensor]:
        ids = [self.tokenizer(t)[:self.max_len] for t in texts]
        longest = max(len(i) for i in ids)
        batch = torch.zeros(len(ids), longest, dtype=torch.long, device=self.pos.device)
        pad = torch.ones(len(ids), longest, dtype=torch.bool, device=self.pos.device)
        for row, i in enumerate(ids):
            batch[row, :len(i)] = torch.tensor(i)
            pad[row, :len(i)] = False
        h = self.embed(batch) + self.pos[:longest]
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        return [h[row, :len(i)] for row, i in enumerate(ids)]
