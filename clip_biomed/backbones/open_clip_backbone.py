"""The Backbone implementation shared by all families: an open_clip ``CustomTextCLIP``.

Every family is loaded into a stock open_clip ``CustomTextCLIP`` (see ``formats.py``), so there are
only two text-tower types to drive from embeddings:

* a Hugging Face encoder (``open_clip.hf_model.HFTextEncoder``: BiomedCLIP, PMC-CLIP):
  ``inputs_embeds`` + attention mask, then the tower's own pooler and projection;
* an OpenAI-CLIP text transformer (``open_clip.transformer.TextTransformer``: CLIP, PubMedCLIP):
  positional embedding, causal mask, ``ln_final``, the EOT row, projection.

Only public modules and attributes of open_clip / transformers are used, no patched forward.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from open_clip.hf_model import HFTextEncoder
from open_clip.transformer import TextTransformer
from torch import nn

from .base import Backbone, PreprocessInfo


class OpenClipBackbone(Backbone):
    """A frozen open_clip ``CustomTextCLIP`` behind the :class:`Backbone` interface.

    Build one with :meth:`wrap`, which picks the subclass for the model's text tower.
    Outputs are float32 whatever the weight dtype (``build_backbone(precision=...)``).
    """

    def __init__(self, model: nn.Module, tokenizer, *, name: str, family: str, context_length: int,
                 pad_id: int, preprocess: PreprocessInfo):
        super().__init__()
        self.model = model
        self._tokenizer = tokenizer  # open_clip tokenizer: callable(list[str]) -> LongTensor[N, L]
        self.name = name
        self.family = family
        self.context_length = context_length
        self.pad_id = pad_id
        self.preprocess = preprocess
        self.ctx_dim = self._word_embeddings().embedding_dim
        self.embed_dim = model.text.output_dim

    @staticmethod
    def wrap(model: nn.Module, tokenizer, **kwargs) -> "OpenClipBackbone":
        text = getattr(model, "text", None)
        if isinstance(text, HFTextEncoder):
            return HFTextBackbone(model, tokenizer, pad_id=text.config.pad_token_id, **kwargs)
        if isinstance(text, TextTransformer):
            CLIPTextBackbone.check_supported(text)
            return CLIPTextBackbone(model, tokenizer, pad_id=text.pad_id, **kwargs)
        raise ValueError(f"{kwargs.get('name')}: text tower {type(text).__name__} is not supported; "
                         "supported are Hugging Face encoders and OpenAI-CLIP text transformers")

    # --- interface -----------------------------------------------------------------------------
    @property
    def text_tower(self) -> nn.Module:
        return self.model.text

    @property
    def image_tower(self) -> nn.Module:
        return self.model.visual

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._tokenizer(texts).to(self.device)

    def num_tokens(self, text: str) -> int:
        # start and end token are the two tokens that the text itself does not produce
        return self._used_length(self._tokenizer([text])) - 2

    def vocabulary(self) -> List[str]:
        return self._token_strings(self._word_embeddings().num_embeddings)

    def token_embedding(self, ids: torch.LongTensor) -> torch.Tensor:
        return self._word_embeddings()(ids.to(self.device)).float()

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        if embeds.dim() != 3 or embeds.shape[:2] != ids.shape:
            raise ValueError(f"embeds must be [N, L, ctx_dim] with [N, L] = ids.shape; got embeds "
                             f"{tuple(embeds.shape)} and ids {tuple(ids.shape)}")
        embeds, ids = embeds.to(self.device), ids.to(self.device)  # like encode_image: inputs may come from the CPU
        length = self._used_length(ids)  # padding beyond the longest prompt cannot change the output
        features = self._encode_trimmed(embeds[:, :length].to(self.weight_dtype), ids[:, :length])
        return features.float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.device, self.weight_dtype)).float()

    # --- per text-tower type -------------------------------------------------------------------
    def _word_embeddings(self) -> nn.Embedding:
        raise NotImplementedError

    def _token_strings(self, size: int) -> List[str]:
        """The strings of token ids ``0..size-1`` (``size``: rows of the word-embedding matrix)."""
        raise NotImplementedError

    def _used_length(self, ids: torch.LongTensor) -> int:
        """Length of the shortest prefix of every row that holds all the tokens that matter."""
        raise NotImplementedError

    def _encode_trimmed(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        raise NotImplementedError


class HFTextBackbone(OpenClipBackbone):
    """Text tower = Hugging Face encoder (BERT): attention mask from the pad id, tower's pooler."""

    def __init__(self, model: nn.Module, tokenizer, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        tokenizer_pad = tokenizer.tokenizer.pad_token_id
        if tokenizer_pad != self.pad_id:
            # the tower masks `ids != config.pad_token_id`; another pad id would attend to padding
            raise ValueError(f"{self.name}: the tokenizer pads with id {tokenizer_pad} but the text "
                             f"tower's config.json has pad_token_id {self.pad_id}; use the tokenizer "
                             "files that belong to the text tower")

    def _word_embeddings(self) -> nn.Embedding:
        return self.model.text.transformer.get_input_embeddings()

    def _token_strings(self, size: int) -> List[str]:
        tokenizer = self._tokenizer.tokenizer
        known = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
        # embedding rows beyond the tokenizer's vocabulary (padding to a round size) have no string
        return known + [f"[unused row {i}]" for i in range(len(known), size)]

    def _used_length(self, ids: torch.LongTensor) -> int:
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        return int(((ids != self.pad_id) * positions).max())  # last real token, + 1

    def _encode_trimmed(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        tower = self.model.text
        mask = (ids != self.pad_id).long()
        # the encoder adds position/token-type embeddings and its embedding LayerNorm itself
        out = tower.transformer(inputs_embeds=embeds, attention_mask=mask)
        return tower.proj(tower.pooler(out, mask))


class CLIPTextBackbone(OpenClipBackbone):
    """Text tower = OpenAI-CLIP transformer: causal mask, features at the EOT token."""

    POOL_TYPES = ("argmax", "eos")

    @classmethod
    def check_supported(cls, text: TextTransformer) -> None:
        problems = []
        if text.pool_type not in cls.POOL_TYPES:
            problems.append(f"pool_type {text.pool_type!r} (supported: {', '.join(cls.POOL_TYPES)})")
        if text.attn_mask is None:
            problems.append("no causal mask")
        if text.cls_emb is not None or getattr(text, "use_pad_mask", False):
            problems.append("CoCa-style class token / padding mask")
        if text.text_projection is None:
            problems.append("no text projection")
        if problems:
            raise ValueError("this OpenAI-CLIP-style text tower is not supported: " + "; ".join(problems))

    def _word_embeddings(self) -> nn.Embedding:
        return self.model.text.token_embedding

    def _token_strings(self, size: int) -> List[str]:
        return [self._tokenizer.decode([i]).strip() for i in range(size)]

    def _pooled_positions(self, ids: torch.LongTensor) -> torch.LongTensor:
        text = self.model.text
        if text.pool_type == "argmax":  # the EOT token has the largest id of the vocabulary
            return ids.argmax(dim=-1)
        return (ids == text.eos_id).int().argmax(dim=-1)

    def _used_length(self, ids: torch.LongTensor) -> int:
        # causal attention: tokens after the pooled EOT cannot influence it
        return int(self._pooled_positions(ids).max()) + 1

    def _encode_trimmed(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        text = self.model.text
        length = embeds.shape[1]
        x = embeds + text.positional_embedding[:length].to(embeds.dtype)
        x = text.transformer(x, attn_mask=text.attn_mask[:length, :length])
        x = text.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), self._pooled_positions(ids)]
        projection = text.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection
