"""Generic ways to adapt *inside* a backbone's towers, written once for every tower with a layout.

Methods such as Biomed-DPT, BiomedAP, CLIP-SVD and CLIP-LoRA change what happens inside the frozen
towers.  They do it through two operations of this module, never through code in a backbone; where
blocks and linear layers sit in each kind of tower is described by ``layouts.py``
(``backbone.tower_layout("image" | "text")``).

* **Token hooks**: ``with image_token_hooks(backbone, {l: fn, ...}):`` every image forward pass
  inside the block calls ``fn(tokens) -> tokens`` on the image tower's tokens ``[B, N, D]`` just
  before block ``l`` (``l = depth``: after the last block, before the final norm and pooling).  The
  sequence may change length (inserted tokens).  Hooks are removed on exit, so the backbone is
  unchanged outside the block.  :func:`image_tokens` gives depth, width and the number of prefix
  tokens (CLS and registers) before the patch tokens.
* **Linear re-parameterisation**: :func:`wrap_linears` replaces the Linear layer of chosen roles
  (``q k v o fc1 fc2``) in chosen blocks of a tower by ``wrap(linear)`` and returns the wrappers in
  a ``ModuleDict`` (register that with the trainer: only what the wrappers hold as parameters and
  persistent buffers is then trained and checkpointed).  Fused projections are split first into
  one Linear per role by exact copies (:class:`SplitQKV`, :class:`SplitMultiheadAttention`), which
  compute the same function as the fused module.

:func:`select_blocks` reads a block selection (``all``, ``top_middle``, ``4-11``, ``0,3,5``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

TokenHook = Callable[[torch.Tensor], torch.Tensor]


# --- splitting fused projections ------------------------------------------------------------------
def _linear_from_rows(fused: nn.Linear, rows: slice) -> nn.Linear:
    weight = fused.weight.detach()[rows]
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=fused.bias is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if fused.bias is not None:
            layer.bias.copy_(fused.bias.detach()[rows])
    return layer.requires_grad_(fused.weight.requires_grad)


def _copy_linear(linear: nn.Linear) -> nn.Linear:
    return _linear_from_rows(linear, slice(None))


class SplitQKV(nn.Module):
    """A fused ``[q; k; v]`` projection (timm's ``attn.qkv``) as three Linear layers ``q``, ``k``, ``v``
    whose outputs are concatenated: the attention module around it runs unchanged."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        if fused.out_features % 3:
            raise ValueError(f"a fused q/k/v projection has 3*d outputs, got {fused.out_features}")
        d = fused.out_features // 3
        self.q, self.k, self.v = (_linear_from_rows(fused, slice(i * d, (i + 1) * d)) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


def _additive_mask(mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """nn.MultiheadAttention's masks (bool: True = not attended; float: added) as a float mask."""
    if mask is None or mask.dtype != torch.bool:
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class SplitMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with its packed input projection split into ``q_proj``, ``k_proj``,
    ``v_proj`` (and ``out_proj`` kept), computing the same attention (scaled dot product).  It takes
    the module's call signature; it returns no attention weights (``need_weights=False``, as open_clip
    calls it)."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only self-attention-shaped nn.MultiheadAttention (one packed in_proj, no bias_k/v, "
                             "no zero attention) can be split")
        d = mha.embed_dim
        packed = nn.Linear(d, 3 * d, bias=mha.in_proj_bias is not None, device=mha.in_proj_weight.device,
                           dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            packed.weight.copy_(mha.in_proj_weight)
            if mha.in_proj_bias is not None:
                packed.bias.copy_(mha.in_proj_bias)
        self.q_proj, self.k_proj, self.v_proj = (
            _linear_from_rows(packed, slice(i * d, (i + 1) * d)).requires_grad_(mha.in_proj_weight.requires_grad)
            for i in range(3))
        self.out_proj = _copy_linear(mha.out_proj)
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = d, mha.num_heads, mha.dropout, mha.batch_first

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if need_weights:
            raise ValueError("SplitMultiheadAttention returns no attention weights; call it with need_weights=False")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, _ = query.shape
        heads, head_dim = self.num_heads, self.embed_dim // self.num_heads

        def split_heads(x):
            return x.reshape(batch, -1, heads, head_dim).transpose(1, 2)

        q, k, v = split_heads(self.q_proj(query)), split_heads(self.k_proj(key)), split_heads(self.v_proj(value))
        mask = _additive_mask(attn_mask, q.dtype)
        if mask is not None and mask.dim() == 3:  # [B * heads, L, S]
            mask = mask.reshape(batch, heads, *mask.shape[-2:])
        padding = _additive_mask(key_padding_mask, q.dtype)
        if padding is not None:  # [B, S]: the same keys are hidden from every query
            padding = padding[:, None, None, :]
            mask = padding if mask is None else mask + padding
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


# --- blocks ---------------------------------------------------------------------------------------
def select_blocks(selection: str, depth: int) -> List[int]:
    """Block indices named by ``selection``: ``all``; ``top_middle`` (blocks depth//3 .. depth-1, the
    published CLIP-SVD name: 4-11 of 12); or comma-separated indices and ranges (``4-11``, ``0,3,5``)."""
    text = str(selection).strip()
    if text == "all":
        return list(range(depth))
    if text == "top_middle":
        return list(range(depth // 3, depth))
    try:
        indices = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            first, _, last = part.partition("-")
            indices.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise ValueError(f"block selection {selection!r}: use 'all', 'top_middle' or indices such as '4-11' or "
                         "'0,3,5'") from None
    outside = [i for i in indices if not 0 <= i < depth]
    if not indices or outside:
        raise ValueError(f"block selection {selection!r} names no block or blocks outside 0..{depth - 1} "
                         f"({outside}): this tower has {depth} blocks")
    return sorted(set(indices))


@dataclass(frozen=True)
class ImageTokens:
    """What token hooks see: ``depth`` blocks of width ``width``; patch tokens start at ``prefix_tokens``."""

    depth: int
    width: int
    prefix_tokens: int


def image_tokens(backbone) -> ImageTokens:
    """Depth, width and prefix tokens of the image tower (an error for towers without token blocks)."""
    layout = backbone.tower_layout("image")
    return ImageTokens(len(layout.blocks), layout.width, layout.prefix_tokens)


# --- token hooks ----------------------------------------------------------------------------------
def _before_block(hook: TokenHook, batch_first: bool):
    def pre_hook(module, args, kwargs):
        tokens = args[0] if batch_first else args[0].transpose(0, 1)
        tokens = hook(tokens)
        return (tokens if batch_first else tokens.transpose(0, 1), *args[1:]), kwargs

    return pre_hook


def _after_block(hook: TokenHook, batch_first: bool):
    def post_hook(module, args, output):
        tokens = hook(output if batch_first else output.transpose(0, 1))
        return tokens if batch_first else tokens.transpose(0, 1)

    return post_hook


@contextlib.contextmanager
def image_token_hooks(backbone, hooks: Mapping[int, TokenHook]) -> Iterator[None]:
    """Within the block, run ``hooks[l](tokens)`` on the image tokens ``[B, N, D]`` before block ``l``
    (``l == depth``: after the last block) in every forward pass of the image tower."""
    layout = backbone.tower_layout("image")
    depth = len(layout.blocks)
    outside = sorted(index for index in hooks if not 0 <= index <= depth)
    if outside:
        raise ValueError(f"token hooks at blocks {outside}: the image tower of {backbone.name} has {depth} blocks "
                         f"(hooks go before block 0..{depth - 1}, or at {depth}: after the last one)")
    handles = []
    try:
        for index, hook in sorted(hooks.items()):
            if index < depth:
                handles.append(layout.blocks[index].register_forward_pre_hook(
                    _before_block(hook, layout.batch_first), with_kwargs=True))
            else:
                handles.append(layout.blocks[depth - 1].register_forward_hook(_after_block(hook, layout.batch_first)))
        yield
    finally:
        for handle in handles:
            handle.remove()


# --- linear re-parameterisation -------------------------------------------------------------------
def _replace(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _split_fused(block: nn.Module, path: str, fused: Mapping[str, type]) -> None:
    """Split the fused module that holds ``path`` (if any and not split yet)."""
    for fused_path, splitter in fused.items():
        if path.startswith(fused_path + "."):
            module = block.get_submodule(fused_path)
            if not isinstance(module, splitter):
                _replace(block, fused_path, splitter(module))


def wrap_linears(backbone, tower: str, roles: Sequence[str], blocks: Sequence[int],
                 wrap: Callable[[nn.Linear], nn.Module]) -> nn.ModuleDict:
    """Replace the Linear of each role in each block of the ``image`` or ``text`` tower by
    ``wrap(linear)``; return the wrappers as ``ModuleDict{block: ModuleDict{role: wrapper}}``."""
    layout = backbone.tower_layout(tower)
    unknown = [role for role in roles if role not in layout.linears]
    if unknown:
        raise ValueError(f"unknown linear role(s) {unknown} for the {tower} tower ({layout.kind}); "
                         f"valid: {', '.join(layout.linears)}")
    wrappers = nn.ModuleDict()
    for index in blocks:
        if not 0 <= index < len(layout.blocks):
            raise ValueError(f"block {index}: the {tower} tower has {len(layout.blocks)} blocks")
        block = layout.blocks[index]
        per_role = nn.ModuleDict()
        for role in roles:
            path = layout.linears[role]
            _split_fused(block, path, layout.fused)
            linear = block.get_submodule(path)
            if type(linear) not in (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear):
                raise TypeError(f"{tower} block {index} {role} ({path}) is a {type(linear).__name__}, not a plain "
                                "Linear: was it wrapped already?")
            per_role[role] = wrap(linear)
            _replace(block, path, per_role[role])
        wrappers[str(index)] = per_role
    return wrappers


class LinearWrapper(nn.Module):
    """Base of the modules :func:`wrap_linears` puts in place of a frozen Linear.  The Linear's weight
    and bias become non-persistent buffers (moved with the backbone, never trained or checkpointed:
    they come back with the backbone), so a wrapper's state dict holds only what it adds."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach(), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)
