"""The one interface every backbone family implements.

Every method (CoOp, BiomedCoOp, ...) is written once against :class:`Backbone`; a new model family is
a new adapter, never a new copy of a method.  All tensors returned are on the backbone's device, and
float tensors are float32 whatever dtype the frozen weights are stored in (``build_backbone(...,
precision=...)``).  Feature outputs are *not* L2-normalised: callers normalise, as CLIP-style methods do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class PreprocessInfo:
    """How images must be prepared for the image tower (fed into the Dassl INPUT.* config).

    ``resizable``: the image tower also takes other sizes (it interpolates its position embeddings,
    as Hugging Face CLIP and SigLIP towers can); otherwise it takes ``size`` x ``size`` only.
    """

    size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bicubic"
    resizable: bool = False


class Backbone(nn.Module):
    """A frozen vision-language model seen through the operations prompt learning needs.

    Attributes that every adapter sets:
      name: the name it was built from (e.g. ``BiomedCLIP`` or ``local-dir:/models/biomedclip``)
      family: ``biomedclip`` (open_clip + Hugging Face text tower), ``clip`` (open_clip with a CLIP
        text transformer: CLIP, PubMedCLIP, QuiltNet, BMC-CLIP, ...), ``pmcclip`` (ResNet-50 +
        PubMedBERT + projection), ``hf-clip`` (a transformers ``CLIPModel``) or ``siglip`` (a
        transformers ``SiglipModel``: MedSigLIP)
      context_length: token length returned by :meth:`tokenize` (256 BiomedCLIP, 77 CLIP/PMC-CLIP,
        65 SigLIP: its 64 tokens behind the placeholder start, see below)
      pad_id: the id of padding tokens in :meth:`tokenize` output
      ctx_dim: width of the word embeddings (768 for BERT towers, 512 for CLIP ViT-B)
      embed_dim: width of the joint image-text space (output of encode_text / encode_image)
      preprocess: :class:`PreprocessInfo`
      text_tower / image_tower: the nn.Modules of the two towers, so a trainer can switch the text
        tower to train mode (dropout) when it wants to reproduce the published behaviour.

    Token layout shared by all families: position 0 holds the start token ([CLS] or SOT), so a
    prompt learner can always put its context vectors at positions 1..n_ctx.  Tokenizers without a
    start token (SigLIP's) get a placeholder there that the text tower never sees: the ids are
    ``[placeholder, tokens..., end, pad...]`` and ``encode_text_embeddings`` drops position 0.

    Scores: :meth:`logits` = ``logit_scale * cos + logit_bias`` is the model's own image-text
    score (CLIP families: bias 0; SigLIP: its learned bias, trained with a sigmoid loss).  Every
    method computes its class logits with it, so a new family's scoring reaches all methods.

    Frozen means eval mode too: ``train()`` on the backbone (or on a module that contains it) leaves
    it in eval mode, so BatchNorm statistics never drift and dropout stays off.  To reproduce the
    published behaviour (BERT dropout on while prompts are trained), call ``text_tower.train()``
    explicitly after switching the trainer's model to train mode.
    """

    name: str
    family: str
    context_length: int
    pad_id: int
    ctx_dim: int
    embed_dim: int
    preprocess: PreprocessInfo

    def train(self, mode: bool = True) -> "Backbone":
        return super().train(False)

    def tokenize(self, texts: Sequence[str]) -> torch.LongTensor:
        """Token ids ``[N, context_length]`` padded with ``pad_id`` (truncated to context_length)."""
        raise NotImplementedError

    def num_tokens(self, text: str) -> int:
        """Number of tokens ``text`` becomes inside a prompt, without start/end tokens.

        E.g. the number of word-pieces of a class name (the published code's ``name_lens`` was
        always 1: the length of a ``[1, context_length]`` tensor).
        """
        raise NotImplementedError

    def vocabulary(self) -> Sequence[str]:
        """Token strings indexed by token id (used to interpret learned context vectors)."""
        raise NotImplementedError

    def token_embedding(self, ids: torch.LongTensor) -> torch.Tensor:
        """Word embeddings only (no position/type embeddings): ``[N, L, ctx_dim]``."""
        raise NotImplementedError

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        """Run the text tower on ``embeds`` ``[N, L, ctx_dim]`` whose layout follows ``ids``.

        ``ids`` gives the attention mask (BERT towers) or the EOT position (CLIP towers).  Padding is
        trimmed to the longest real prompt in the batch before the tower runs; the result equals the
        untrimmed computation.  Returns ``[N, embed_dim]``.  Differentiable w.r.t. ``embeds``.
        """
        raise NotImplementedError

    def encode_text(self, ids: torch.LongTensor) -> torch.Tensor:
        """Text features of token ids, ``[N, embed_dim]`` (same trimming, equals the tower's own)."""
        return self.encode_text_embeddings(self.token_embedding(ids), ids)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Image features ``[B, embed_dim]`` of preprocessed images ``[B, 3, H, W]``."""
        raise NotImplementedError

    # Adapters keep the wrapped model in ``self.model``; open_clip and transformers models both hold
    # the log of the logit scale in a ``logit_scale`` parameter (and SigLIP-style ones ``logit_bias``).
    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype the frozen weights are stored in (``build_backbone(precision=...)``)."""
        return self.model.logit_scale.dtype

    @property
    def logit_scale(self) -> torch.Tensor:
        """The model's logit scale *already exponentiated* (s in s * cos), a 0-d float32 tensor."""
        return self.model.logit_scale.detach().exp().reshape(()).float()

    @property
    def logit_bias(self) -> torch.Tensor:
        """The model's logit bias (b in s * cos + b), a 0-d float32 tensor: 0 for CLIP-trained models."""
        bias = getattr(getattr(self, "model", None), "logit_bias", None)
        if bias is None:
            return torch.zeros((), device=self.device)
        return bias.detach().reshape(()).float()

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Image-text scores ``logit_scale * image_features @ text_features^T + logit_bias``.

        ``image_features`` ``[B, D]`` and ``text_features`` ``[C, D]`` (one classifier for the batch)
        or ``[B, C, D]`` (one per image, e.g. CoCoOp), both L2-normalised by the caller; returns
        ``[B, C]``.  The bias does not change a softmax (cross-entropy, KL, argmax) over classes; it
        matters where a logit is read on its own, e.g. ``sigmoid(logit)`` for a sigmoid-trained model.
        """
        if text_features.dim() == 3:
            cosine = torch.einsum("bd,bcd->bc", image_features, text_features)
        else:
            cosine = image_features @ text_features.t()
        return self.logit_scale * cosine + self.logit_bias

    def tower_layout(self, tower: str):
        """Where the blocks of the ``image`` or ``text`` tower and their linear layers live
        (``layouts.TowerLayout``), for methods that adapt inside the towers (``adapt.py``).  Found by
        the tower's module type in ``layouts.py``; an error for towers it does not describe."""
        from .layouts import find_layout

        return find_layout(self, tower)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
