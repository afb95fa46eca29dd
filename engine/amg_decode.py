"""Decoding many single-point prompts against one image embedding.

``decode_points`` returns what ``Sam.mask_decoder(..., multimask_output=True)`` returns for
``B`` one-point prompts. With ``shared=False`` it calls the decoder module. With
``shared=True`` (default) it runs the same computation from the decoder's own submodules
(official structure and names: ``transformer.layers[i].cross_attn_token_to_image`` …) but
does the image-side work once instead of once per prompt where it can:

* before the first block's image-to-token attention the image tokens are the same for every
  prompt, so their projections are computed once and broadcast;
* afterwards, projections of per-prompt image tokens are moved onto the few prompt tokens by
  associativity: ``(W_q x)·k = x·(W_qᵀ k)`` and ``Σ_j a_j (W_v x_j + b) = W_v Σ_j a_j x_j + b``
  (softmax rows sum to 1), and the output projection of image-to-token attention is folded
  into the values. That trades ``HW × C × C/2`` multiply-adds per projection for
  ``HW × C × heads × tokens``.

Results equal the module's up to float rounding (reassociation), checked in the tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def decode_points(
    model: nn.Module, features: torch.Tensor, coords: np.ndarray, shared: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks for one-point (positive) prompts on one image embedding.

    ``features`` is ``1×C×h×w``; ``coords`` ``B×2`` (x, y) in the encoder's input frame.
    Returns low-res logits ``B×3×4h×4w`` and predicted IoUs ``B×3``.
    """
    device = features.device
    points = torch.as_tensor(coords, device=device)[:, None, :]
    labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=device)
    sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
    image_pe = model.prompt_encoder.get_dense_pe()
    if not shared:
        return model.mask_decoder(
            image_embeddings=features,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return _shared_decode(model.mask_decoder, features, image_pe, sparse, dense[:1])


def _shared_decode(
    decoder: nn.Module,
    features: torch.Tensor,
    image_pe: torch.Tensor,
    sparse: torch.Tensor,
    dense: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    b = sparse.shape[0]
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens[None].expand(b, -1, -1), sparse], dim=1)
    src = features + dense  # 1×C×h×w: the same for every prompt
    _, c, h, w = src.shape
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = image_pe.flatten(2).permute(0, 2, 1)
    queries, query_pe = tokens, tokens
    transformer = decoder.transformer
    for layer in transformer.layers:
        queries, keys = _block(layer, queries, keys, query_pe, key_pe)
    attn_out = _tokens_to_image(
        transformer.final_attn_token_to_image, queries + query_pe, keys + key_pe, keys
    )
    queries = transformer.norm_final_attn(queries + attn_out)
    keys = keys.expand(b, -1, -1)
    iou_token_out = queries[:, 0, :]
    mask_tokens_out = queries[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(keys.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [
            decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
            for i in range(1, decoder.num_mask_tokens)
        ],
        dim=1,
    )
    bu, cu, hu, wu = upscaled.shape
    masks = (hyper_in @ upscaled.view(bu, cu, hu * wu)).view(bu, -1, hu, wu)
    iou_pred = decoder.iou_prediction_head(iou_token_out)[:, 1:]
    return masks, iou_pred


def _block(
    layer: nn.Module,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``TwoWayAttentionBlock``; ``keys`` may be ``1×HW×C`` (shared) or ``B×HW×C``."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)
    attn_out = _tokens_to_image(
        layer.cross_attn_token_to_image, queries + query_pe, keys + key_pe, keys
    )
    queries = layer.norm2(queries + attn_out)
    queries = layer.norm3(queries + layer.mlp(queries))
    attn_out = _image_to_tokens(
        layer.cross_attn_image_to_token, keys + key_pe, queries + query_pe, queries
    )
    keys = layer.norm4(keys + attn_out)
    return queries, keys


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)  # B×heads×T×d


def _per_head_weight(linear: nn.Linear, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` (internal×C) as ``heads×d×C`` and the bias as ``heads×d``."""
    internal, c = linear.weight.shape
    return linear.weight.view(n, internal // n, c), linear.bias.view(n, internal // n)


def _tokens_to_image(
    attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` for ``B`` prompt-token sets against image tokens ``k``/``v``."""
    n = attn.num_heads
    qh = _heads(attn.q_proj(q), n)  # B×n×N×d
    b, _, t, d = qh.shape
    if k.shape[0] == 1:  # shared image tokens: project once; one matmul per head for all B
        kh = _heads(attn.k_proj(k), n)[0]  # n×HW×d
        vh = _heads(attn.v_proj(v), n)[0]
        q_all = qh.permute(1, 0, 2, 3).reshape(n, b * t, d)
        weights = torch.softmax((q_all @ kh.transpose(1, 2)) / math.sqrt(d), dim=-1)
        out = (weights @ vh).view(n, b, t, d).permute(1, 0, 2, 3)  # B×n×N×d
    else:  # per-prompt image tokens: move the k/v projections onto the prompt tokens
        wk, bk = _per_head_weight(attn.k_proj, n)
        wv, bv = _per_head_weight(attn.v_proj, n)
        q_in = torch.einsum("bntd,ndc->bntc", qh, wk).reshape(b, n * t, -1)  # B×nN×C
        bias = (qh * bk[None, :, None, :]).sum(-1).reshape(b, n * t, 1)
        logits = torch.baddbmm(bias, q_in, k.transpose(1, 2))  # B×nN×HW
        weights = torch.softmax(logits / math.sqrt(d), dim=-1)
        pooled = (weights @ v).view(b, n, t, -1)  # B×n×N×C
        out = torch.einsum("bntc,ndc->bntd", pooled, wv) + bv[None, :, None, :]
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, n * d))


def _image_to_tokens(
    attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """``attn(q=q, k=k, v=v)`` with image-token queries ``q`` (``1`` or ``B`` ×HW×C)."""
    n = attn.num_heads
    kh = _heads(attn.k_proj(k), n)  # B×n×N×d
    vh = _heads(attn.v_proj(v), n)
    b, _, t, d = kh.shape
    hw = q.shape[1]
    if q.shape[0] == 1:  # shared queries: one matmul per head for all B prompt sets
        qh = _heads(attn.q_proj(q), n)[0]  # n×HW×d
        k_all = kh.permute(1, 3, 0, 2).reshape(n, d, b * t)
        logits = (qh @ k_all).view(n, hw, b, t).permute(2, 1, 0, 3)  # B×HW×n×N
    else:
        wq, bq = _per_head_weight(attn.q_proj, n)
        k_in = torch.einsum("bntd,ndc->bntc", kh, wq).reshape(b, n * t, -1)  # B×nN×C
        bias = (kh * bq[None, :, None, :]).sum(-1).reshape(b, 1, n * t)
        logits = torch.baddbmm(bias, q, k_in.transpose(1, 2)).view(b, hw, n, t)
    weights = _softmax_last(logits / math.sqrt(d)).reshape(b, hw, n * t)
    # out_proj(concat_h(A_h V_h)) = Σ_h A_h (V_h W_o,hᵀ) + b_o
    wo = attn.out_proj.weight  # C×(n·d)
    v_out = torch.einsum("bntd,cnd->bntc", vh, wo.view(wo.shape[0], n, d))  # B×n×N×C
    return torch.baddbmm(attn.out_proj.bias, weights, v_out.reshape(b, n * t, -1))


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (the prompt tokens): written out, it is several times
    faster on CPU than ``torch.softmax``, whose per-row overhead dominates for ~7 entries."""
    e = (x - x.amax(dim=-1, keepdim=True)).exp_()
    return e.div_(e.sum(dim=-1, keepdim=True))
