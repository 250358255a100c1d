"""KgCoOp (Yao et al., CVPR 2023): CoOp kept close to the hand-written prompt's knowledge.

With t_c the normalised learned-prompt features and t_c^zs the normalised features of the frozen
zero-shot prompt ``TEMPLATE`` ("a photo of a {}.") of class c, the loss is

    CE(s f t^T, y) + W * (1 - mean_c cos(t_c, t_c^zs))

(reference/biomedcoop.md §2.1).  Only ``prompt_learner.ctx`` trains; t^zs is computed once per
run.  Keys ``TRAINER.KGCOOP.*``: the context keys, ``W`` (published default 1.0, per-dataset values
in the configs), ``TEMPLATE``, ``CTX_INIT_FROM_TEMPLATE``.

Fixes of the published code: ``CTX_INIT`` is honoured (the published trainer replaced any non-empty
CTX_INIT by "a photo of a"; ``CTX_INIT_FROM_TEMPLATE True`` does the same here); the amp path works
(the published one crashed on a tuple); the unused meta-net, bias vectors and adapter are gone.
"""
from __future__ import annotations

import torch

from clip_biomed.method import published_names, register_method
from trainers.coop import ZeroShotGuidedCoOp, guided_context_config

PUBLISHED_ALIASES = published_names("KgCoOp_{}")


def add_config(cfg) -> None:
    cfg.TRAINER.KGCOOP = guided_context_config()
    cfg.TRAINER.KGCOOP.W = 1.0


def knowledge_distance(text_features: torch.Tensor, zero_shot_features: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of cos(t_c, t_c^zs), for L2-normalised ``[C, D]`` features."""
    return 1.0 - (text_features * zero_shot_features).sum(dim=-1).mean()


class KgCoOp(ZeroShotGuidedCoOp):
    """KgCoOp on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "KgCoOp"
    CONFIG_NODE = "KGCOOP"

    def losses(self, logits, labels, image_features, text_features):
        losses = super().losses(logits, labels, image_features, text_features)
        losses["kg"] = self.opts.W * knowledge_distance(text_features, self.zero_shot_text_features())
        return losses


register_method(KgCoOp, PUBLISHED_ALIASES)
