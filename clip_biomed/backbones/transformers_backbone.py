"""The Backbone of a Hugging Face ``transformers`` dual encoder: ``CLIPModel`` or ``SiglipModel``.

Both are driven through their own public forward (``get_text_features`` / ``get_image_features``);
to run the text tower from embeddings (CoOp), the word-embedding lookup of that forward is replaced
by the given embeddings with a forward hook on ``text_model.embeddings.token_embedding``, so the
tower adds its position embeddings, builds its masks and pools exactly as it does for token ids.

The two text towers differ in what trimming may drop:

* CLIP (``hf-clip``): a causal transformer pooled at the first end token (or at the largest id for
  configs whose ``eos_token_id`` is 2, as transformers does): every token after the pooled one is
  invisible to it, so the sequence is cut after the longest prompt's end token, exactly.
* SigLIP (``siglip``): a bidirectional transformer without padding mask, pooled at the *last*
  position, trained on text padded to 64 tokens with pad = end token (big_vision; transformers'
  docs ask for ``padding="max_length"``; open_clip issue #984).  Every padding position takes part,
  with its own position embedding, so no padding can be dropped: the tower always runs all 64
  tokens (still 4x fewer than BiomedCLIP's untrimmed 256), and "trimming" is the identity, exactly.
  Its tokenizer adds no start token, so ``tokenize`` puts a placeholder at position 0 (the shared
  token layout, ``base.py``) that ``encode_text_embeddings`` removes before the tower runs.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import List, Sequence, Union

import torch
from torch import nn

from .base import Backbone, PreprocessInfo

# model_type in config.json -> family name
TRANSFORMERS_FAMILIES = {"clip": "hf-clip", "siglip": "siglip"}


def _pooled(output) -> torch.Tensor:
    # transformers >= 5 returns a model output (features in pooler_output), older versions a tensor
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class TransformersBackbone(Backbone):
    """A frozen transformers ``CLIPModel`` / ``SiglipModel`` behind the :class:`Backbone` interface."""

    def __init__(self, model: nn.Module, tokenizer, *, name: str, preprocess: PreprocessInfo):
        super().__init__()
        model_type = model.config.model_type
        if model_type not in TRANSFORMERS_FAMILIES:
            raise ValueError(f"{name}: transformers model type {model_type!r} is not supported; supported: "
                             f"{', '.join(TRANSFORMERS_FAMILIES)}")
        self.model = model
        self._tokenizer = tokenizer
        self.name = name
        self.family = TRANSFORMERS_FAMILIES[model_type]
        self.preprocess = preprocess
        text_config = model.config.text_config
        self._tower_length = text_config.max_position_embeddings
        self._end_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._end_id
        probe = tokenizer(["photo"], add_special_tokens=True).input_ids[0]
        # a tokenizer without a start token gets a placeholder at position 0 (see base.py)
        self._placeholder_start = probe[0] not in tokenizer.all_special_ids
        self.context_length = self._tower_length + int(self._placeholder_start)
        self.ctx_dim = self._word_embeddings().embedding_dim
        self.embed_dim = (model.config.projection_dim if self.family == "hf-clip"
                          else text_config.projection_size)

    # --- interface -----------------------------------------------------------------------------
    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    @property
    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    def tokenize(self, texts: Union[str, Sequence[str]]) -> torch.LongTensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        ids = self._tokenizer(texts, padding="max_length", truncation=True, max_length=self._tower_length,
                              return_tensors="pt").input_ids
        if self._placeholder_start:
            ids = torch.cat([torch.full_like(ids[:, :1], self.pad_id), ids], dim=1)
        return ids.to(self.device)

    def num_tokens(self, text: str) -> int:
        # layout [start, tokens..., end, ...]: the tokens lie strictly between the two
        return int(self._end_positions(self.tokenize([text]))[0]) - 1

    def vocabulary(self) -> List[str]:
        size = self._word_embeddings().num_embeddings
        known = min(size, len(self._tokenizer))
        strings = [s.strip() for s in self._tokenizer.batch_decode([[i] for i in range(known)])]
        # embedding rows beyond the tokenizer's vocabulary (padding to a round size) have no string
        return strings + [f"[unused row {i}]" for i in range(known, size)]

    def token_embedding(self, ids: torch.LongTensor) -> torch.Tensor:
        return self._word_embeddings()(ids.to(self.device)).float()

    def encode_text_embeddings(self, embeds: torch.Tensor, ids: torch.LongTensor) -> torch.Tensor:
        if embeds.dim() != 3 or embeds.shape[:2] != ids.shape:
            raise ValueError(f"embeds must be [N, L, ctx_dim] with [N, L] = ids.shape; got embeds "
                             f"{tuple(embeds.shape)} and ids {tuple(ids.shape)}")
        embeds, ids = embeds.to(self.device, self.weight_dtype), ids.to(self.device)
        length = self._used_length(ids)
        start = int(self._placeholder_start)
        embeds, ids = embeds[:, start:length], ids[:, start:length]
        with self._word_embeddings_replaced_by(embeds):
            features = _pooled(self.model.get_text_features(input_ids=ids))
        return features.float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, self.weight_dtype)
        native = self.preprocess.size
        interpolate = tuple(images.shape[-2:]) != (native, native)  # a size the user forced
        return _pooled(self.model.get_image_features(pixel_values=images,
                                                     interpolate_pos_encoding=interpolate)).float()

    # --- helpers -------------------------------------------------------------------------------
    def _word_embeddings(self) -> nn.Embedding:
        return self.model.text_model.embeddings.token_embedding

    def _end_positions(self, ids: torch.LongTensor) -> torch.LongTensor:
        """Position of each row's end token (the first one after the start; pad may equal end)."""
        return (ids[:, 1:] == self._end_id).int().argmax(dim=-1) + 1

    def _used_length(self, ids: torch.LongTensor) -> int:
        if self.family == "siglip":  # every position reaches the pooled last token
            return ids.shape[1]
        return int(self._end_positions(ids).max()) + 1  # causal: nothing after the pooled end token counts

    @contextmanager
    def _word_embeddings_replaced_by(self, embeds: torch.Tensor):
        def replace(module, inputs, output):
            if output.shape != embeds.shape:
                raise RuntimeError(f"word embeddings {tuple(output.shape)} reached for prompts {tuple(embeds.shape)}")
            return embeds

        handle = self._word_embeddings().register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()
