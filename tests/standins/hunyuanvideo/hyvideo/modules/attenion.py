"""``parallel_attention`` as HunyuanVideo has it (hyvideo/modules/attenion.py, the file name is
upstream's): under xDiT each rank holds a slice of the video tokens; the video tokens and the
unpadded text of the first batch row (``cu_seqlens_q[1]``) go through
``hybrid_seq_parallel_attn`` (xfuser's ``xFuserLongContextAttention``, the text joined at the
rear and replicated on every rank), the text padding after it through flash attention, alone.

Upstream calls flash_attn's ``_flash_attn_forward``; the stand-in has one with its contract
on PyTorch (no flash-attn without CUDA). Like upstream, every batch row is cut at the first
row's text length: with classifier-free guidance (a batch of 2) sequence parallel equals one
process only when the two prompts have the same number of valid text tokens.
"""

import torch


def _flash_attn_forward(q, k, v, dropout_p, softmax_scale, causal, window_size_left=-1, window_size_right=-1,
                        softcap=0.0, alibi_slopes=None, return_softmax=False):
    """flash_attn >= 2.7's ``_flash_attn_forward``: q, k, v [b, s, heads, d] ->
    (out [b, s, heads, d], softmax_lse [b, heads, s], S_dmask, rng_state)."""
    assert not causal and dropout_p == 0.0 and (window_size_left, window_size_right) == (-1, -1)
    scores = (q.transpose(1, 2).float() @ k.transpose(1, 2).float().transpose(-1, -2)) * softmax_scale
    lse = scores.logsumexp(dim=-1)
    out = (scores - lse[..., None]).exp() @ v.transpose(1, 2).float()  # plain ops: an empty tail is fine
    return out.transpose(1, 2).to(q.dtype), lse, None, None


def parallel_attention(hybrid_seq_parallel_attn, q, k, v, img_q_len, img_kv_len, cu_seqlens_q, cu_seqlens_kv):
    """q, k, v [b, video + text, heads, d] -> [b, video + text, heads * d]."""
    text_end_q, text_end_kv = int(cu_seqlens_q[1]), int(cu_seqlens_kv[1])  # the first row's valid tokens
    video_and_text = hybrid_seq_parallel_attn(
        None, q[:, :img_q_len], k[:, :img_kv_len], v[:, :img_kv_len], dropout_p=0.0, causal=False,
        joint_tensor_query=q[:, img_q_len:text_end_q], joint_tensor_key=k[:, img_kv_len:text_end_kv],
        joint_tensor_value=v[:, img_kv_len:text_end_kv], joint_strategy="rear")
    padding, *_ = _flash_attn_forward(q[:, text_end_q:], k[:, text_end_kv:], v[:, text_end_kv:], dropout_p=0.0,
                                      softmax_scale=q.shape[-1] ** -0.5, causal=False)
    return torch.cat([video_and_text, padding], dim=1).flatten(2)
