"""CoOp (Zhou et al., IJCV 2022): learn the context words of the class prompts.

With f the normalised frozen image features, t_c the normalised text features of the prompt
``[START] ctx_1 .. ctx_n <class c> . [END]`` and s the backbone's logit scale, the logits are
s * f t^T and the loss is their cross-entropy.  Only ``prompt_learner.ctx`` trains
(``TRAINER.COOP.*``, defaults as published: reference/biomedcoop.md §3.1).

The class is also the base of the CoOp family: KgCoOp and ProGrad (through ``ZeroShotGuidedCoOp``,
which adds the frozen zero-shot classifier) add a loss term or an update rule (``losses``,
``backward_and_step``), CoCoOp replaces the logits (``training_logits``, ``logits_from_features``).

Fixes of the published code: ``CTX_INIT`` counts tokens, not words, and works for any ``N_CTX``
that fits it (the published CoOp set N_CTX to the number of words); multi-token class names work
for the middle/front class positions; padding is trimmed by the backbone; the text features are
computed once per evaluation (docs/methods.md).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_biomed.dassl import build_lr_scheduler, build_optimizer, compute_accuracy
from clip_biomed.method import ClipTrainer, published_names, register_method
from clip_biomed.prompt_learner import PromptLearner, context_state_dict

PUBLISHED_ALIASES = published_names("CoOp_{}")
# The hand-written prompt of zero-shot CLIP, which the published code uses for every dataset
# (CUSTOM_TEMPLATES): the zero-shot classifier, KgCoOp's anchor and ProGrad's teacher.
ZERO_SHOT_TEMPLATE = "a photo of a {}."


def context_config(ctx_init: str = "") -> CN:
    """The prompt-context keys every CoOp-family node has, with the published defaults."""
    node = CN()
    node.N_CTX = 4
    node.CSC = False
    node.CTX_INIT = ctx_init
    node.PREC = "fp32"
    node.CLASS_TOKEN_POSITION = "end"
    return node


def add_config(cfg) -> None:
    cfg.TRAINER.COOP = context_config()


def template_words(template: str) -> str:
    """The words of a template before the class name: "a photo of a" for "a photo of a {}."."""
    return template.split("{}")[0].strip()


def check_template(template: str, key: str) -> None:
    """A prompt template holds exactly one ``{}``, for the class name."""
    if template.count("{}") != 1:
        raise ValueError(f"{key} must hold exactly one {{}} for the class name, e.g. {ZERO_SHOT_TEMPLATE!r}; "
                         f"got {template!r}")


class CoOp(ClipTrainer):
    """CoOp on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "CoOp"
    CONFIG_NODE = "COOP"

    def build_model(self):
        self.build_backbone()
        print("Building the prompt learner")
        self.prompt_learner = self.build_prompt_learner().to(self.device)
        self.prompt_learner.metadata = self.run_metadata()
        print(f'Initial context: "{self.prompt_learner.prompt_prefix}"')
        optim = build_optimizer(self.prompt_learner, self.cfg.OPTIM)
        sched = build_lr_scheduler(optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)
        self.print_trainable_parameters()

    def build_prompt_learner(self, cls=PromptLearner, **kwargs) -> PromptLearner:
        """The method's prompt learner from its config node (``kwargs``: the method's own options)."""
        opts = self.opts
        return cls(self.backbone, self.dm.dataset.classnames, n_ctx=opts.N_CTX, ctx_init=self.context_init_words(),
                   csc=opts.CSC, class_token_position=opts.CLASS_TOKEN_POSITION, **kwargs)

    def context_init_words(self) -> str:
        return self.opts.CTX_INIT

    # -- forward passes ------------------------------------------------------------------------

    def text_features(self) -> torch.Tensor:
        """Normalised features ``[C, D]`` of the learned prompts (differentiable w.r.t. the context)."""
        prompts = self.prompt_learner()
        features = self.backbone.encode_text_embeddings(prompts, self.prompt_learner.token_ids)
        return F.normalize(features.float(), dim=-1)

    def training_logits(self, image_features) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits ``[B, C]`` of a training batch and the learned text features they used."""
        with self.precision.autocast():
            text_features = self.text_features()
        return self.backbone.logits(image_features, text_features), text_features

    def losses(self, logits, labels, image_features, text_features) -> Dict[str, torch.Tensor]:
        """The loss terms (weights applied); their sum is minimised."""
        return {"ce": F.cross_entropy(logits, labels)}

    def backward_and_step(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        """One update from the loss terms; returns the loss that is logged as ``loss``."""
        loss = sum(losses.values())
        self.precision.backward_and_step(loss, self._optims["prompt_learner"])
        return loss

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        image_features = self.image_features(image)
        logits, text_features = self.training_logits(image_features)
        losses = self.losses(logits, label, image_features, text_features)
        loss = self.backward_and_step(losses)
        summary = {"loss": loss.item()}
        if len(losses) > 1:
            summary.update({f"loss_{name}": value.item() for name, value in losses.items()})
        summary["acc"] = compute_accuracy(logits, label)[0].item()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    @torch.no_grad()
    def logits_from_features(self, image_features):
        text_features = self.eval_constant("text_features", self.text_features)
        return self.backbone.logits(image_features, text_features)

    # -- checkpoints -----------------------------------------------------------------------------

    def loadable_state_dict(self, name, state_dict):
        return context_state_dict(state_dict)


register_method(CoOp, PUBLISHED_ALIASES)


def guided_context_config() -> CN:
    """Keys of the methods guided by the zero-shot classifier: the context keys (CTX_INIT "a photo
    of a", as published), the classifier's TEMPLATE and the published init switch."""
    node = context_config("a photo of a")
    node.TEMPLATE = ZERO_SHOT_TEMPLATE
    # True: as the published KgCoOp and ProGrad, a non-empty CTX_INIT is replaced by the template's
    # words before the class name ("a photo of a"); False: CTX_INIT's own words initialise the context.
    node.CTX_INIT_FROM_TEMPLATE = False
    return node


class ZeroShotGuidedCoOp(CoOp):
    """CoOp guided by the frozen zero-shot classifier of TEMPLATE (KgCoOp, ProGrad); not registered."""

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_template(cfg.TRAINER[self.CONFIG_NODE].TEMPLATE, f"TRAINER.{self.CONFIG_NODE}.TEMPLATE")

    def context_init_words(self) -> str:
        opts = self.opts
        if opts.CTX_INIT and opts.CTX_INIT_FROM_TEMPLATE:
            return template_words(opts.TEMPLATE)
        return opts.CTX_INIT

    def zero_shot_text_features(self) -> torch.Tensor:
        """Normalised features ``[C, D]`` of the TEMPLATE prompts, frozen, computed once per run."""
        return self.run_constant("zero_shot_text_features", lambda: self.class_text_features(self.opts.TEMPLATE))
