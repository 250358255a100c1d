"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context conditioned on each image.

A meta-network pi = Linear(D -> D/16) - ReLU - Linear(D/16 -> ctx_dim) maps the normalised frozen
image feature f_b to a shift of the context: image b's prompts use ctx + pi(f_b), so every image has
its own C text features t_b and logits l_b = s f_b t_b^T; the loss is CE (reference/biomedcoop.md
§2.1).  ``prompt_learner.ctx`` and ``prompt_learner.meta_net`` train.  Since the shift depends only
on the frozen image feature, evaluation works from (cached) image features like every method;
the text features are computed per image (B x C prompts), which CoCoOp cannot avoid.

Memory: a step encodes B x C prompts.  ``TEXT_CHUNK`` caps the prompts per text-tower pass (rounded
down to whole images, at least one image) and ``RECOMPUTE`` keeps only each pass's inputs and
outputs during training, recomputing the tower's activations in the backward pass
(torch.utils.checkpoint); both give the same numbers as one pass over the batch, and keep the
memory of any batch size and class count bounded (docs/methods.md has the measurements).

Fixes of the published code: CSC and the middle/front class positions work (the published
CoCoOp had neither); mixed precision through autocast (the published fp16 path cast the meta-net).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from clip_biomed.method import published_names, register_method
from clip_biomed.prompt_learner import PromptLearner
from trainers.coop import CoOp, context_config

PUBLISHED_ALIASES = published_names("CoCoOp_{}")


def add_config(cfg) -> None:
    cfg.TRAINER.COCOOP = context_config()
    cfg.TRAINER.COCOOP.TEXT_CHUNK = 0  # prompts per text-tower pass; 0: the whole batch in one pass
    cfg.TRAINER.COCOOP.RECOMPUTE = False  # recompute text-tower activations in the backward pass


class ConditionalPromptLearner(PromptLearner):
    """The CoOp context plus the meta-network that shifts it per image (names as published, so the
    published CoCoOp checkpoints load)."""

    def __init__(self, backbone, classnames, **kwargs):
        super().__init__(backbone, classnames, **kwargs)
        hidden = max(backbone.embed_dim // 16, 1)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(backbone.embed_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, backbone.ctx_dim)),
        ])).to(backbone.device)

    def image_contexts(self, image_features: torch.Tensor) -> torch.Tensor:
        """The context of each image: ``[B, n_ctx, ctx_dim]`` (``[B, n_cls, n_ctx, ctx_dim]`` with CSC)."""
        shift = self.meta_net(image_features)
        shift = shift[:, None, None, :] if self.csc else shift[:, None, :]
        return self.ctx.unsqueeze(0) + shift

    def prompts_for(self, contexts: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[G * n_cls, L, ctx_dim]`` of G images' contexts, image by image."""
        return torch.cat([self(ctx) for ctx in contexts])


def image_text_features(backbone, learner: ConditionalPromptLearner, precision, contexts: torch.Tensor) -> torch.Tensor:
    """Normalised text features ``[G, C, D]`` of G images' prompts, in one text-tower pass."""
    ids = learner.token_ids.repeat(len(contexts), 1)
    with precision.autocast():
        features = backbone.encode_text_embeddings(learner.prompts_for(contexts), ids)
    return F.normalize(features.float(), dim=-1).view(len(contexts), learner.n_cls, -1)


def per_image_logits(backbone, learner: ConditionalPromptLearner, precision, image_features: torch.Tensor,
                     text_chunk: int = 0, recompute: bool = False) -> torch.Tensor:
    """Logits ``[B, C]`` of normalised image features, each image against the prompts of its own
    context; the text tower sees at most ``text_chunk`` prompts at once (whole images, at least one;
    0: all), and with ``recompute`` (while gradients are recorded) keeps no activations of its own."""
    with precision.autocast():
        contexts = learner.image_contexts(image_features)
    step = max(text_chunk // learner.n_cls, 1) if text_chunk > 0 else len(image_features)
    recompute = recompute and torch.is_grad_enabled()
    logits = []
    for start in range(0, len(image_features), step):
        group = contexts[start:start + step]
        if recompute:
            text_features = checkpoint(image_text_features, backbone, learner, precision, group, use_reentrant=False)
        else:
            text_features = image_text_features(backbone, learner, precision, group)
        logits.append(backbone.logits(image_features[start:start + step], text_features))
    return torch.cat(logits)


class CoCoOp(CoOp):
    """CoCoOp on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "CoCoOp"
    CONFIG_NODE = "COCOOP"

    def build_prompt_learner(self, cls=ConditionalPromptLearner, **kwargs) -> PromptLearner:
        return super().build_prompt_learner(cls, **kwargs)

    def conditional_logits(self, image_features: torch.Tensor) -> torch.Tensor:
        return per_image_logits(self.backbone, self.prompt_learner, self.precision, image_features,
                                self.opts.TEXT_CHUNK, self.opts.RECOMPUTE)

    def training_logits(self, image_features):
        return self.conditional_logits(image_features), None

    @torch.no_grad()
    def logits_from_features(self, image_features):
        return self.conditional_logits(image_features)

    def loadable_state_dict(self, name, state_dict):
        return state_dict  # the context and the meta-network (the prompt buffers are rebuilt)


register_method(CoCoOp, PUBLISHED_ALIASES)
