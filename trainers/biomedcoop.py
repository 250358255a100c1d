"""BiomedCoOp (CVPR 2025): CoOp context learning regularised by an LLM prompt ensemble.

Loss per step (reference/biomedcoop.md §1.4), with f the normalised image features, t the normalised
learned-prompt text features, T[c, p] the normalised features of LLM prompt p of class c and s the
backbone's logit scale:

* CE on logits s * f t^T;
* SCCM: lambda_s * mean over (c, d) of (t - mean_p T)^2, the prototype being the renormalised mean of
  *all* prompts;
* KDSP: lambda_k * KL(teacher || student) summed and divided by B * C, the teacher being s * f w^T
  with w the renormalised mean of the prompts kept by the outlier rule on this batch.

Fixes that do not change the math: one image-encoder pass per step (the teacher uses the same image
features), no model copies, padding trimmed by the backbone, teacher features computed once, text
features computed once per evaluation, the pruning rule vectorised (no host syncs) and well defined
when the score spread is zero (every prompt is kept).  Only ``prompt_learner.ctx`` trains.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_biomed.dassl import build_lr_scheduler, build_optimizer, compute_accuracy
from clip_biomed.method import ClipTrainer, published_names, register_method
from clip_biomed.prompt_learner import PromptLearner, context_state_dict
from clip_biomed.prompts import load_prompt_file

# Published trainer names and the backbone each one fixes (their YAMLs say ViT-B/16 for all of them).
PUBLISHED_ALIASES = published_names("BiomedCoOp_{}")


def add_config(cfg) -> None:
    """TRAINER.BIOMEDCOOP keys with the published defaults (reference/biomedcoop.md §3.1)."""
    cfg.TRAINER.BIOMEDCOOP = CN()
    cfg.TRAINER.BIOMEDCOOP.CTX_INIT = "a photo of a"
    cfg.TRAINER.BIOMEDCOOP.CSC = False
    cfg.TRAINER.BIOMEDCOOP.CLASS_TOKEN_POSITION = "end"
    cfg.TRAINER.BIOMEDCOOP.N_CTX = 4
    cfg.TRAINER.BIOMEDCOOP.PREC = "fp32"
    cfg.TRAINER.BIOMEDCOOP.SCCM_LAMBDA = 1.0
    cfg.TRAINER.BIOMEDCOOP.KDSP_LAMBDA = 1.0
    cfg.TRAINER.BIOMEDCOOP.TAU = 1.5
    cfg.TRAINER.BIOMEDCOOP.N_PROMPTS = 50
    # Prompt-ensemble JSON: empty = the packaged file for DATASET.NAME, else a path or dataset name.
    cfg.TRAINER.BIOMEDCOOP.PROMPTS = ""
    # The published trainer leaves the text tower in train mode (dropout on) while training; the
    # teacher features are always computed in eval mode.  False = text tower in eval mode throughout.
    cfg.TRAINER.BIOMEDCOOP.TEXT_DROPOUT = True


# ---------------------------------------------------------------------------------------------
# The method's math, as pure functions of tensors (tested against an independent computation).


def prompt_scores(image_features: torch.Tensor, prompt_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """S_p = mean over the batch of the max class logit when only prompt p is the classifier. ``[P]``."""
    logits = logit_scale * torch.einsum("bd,cpd->bcp", image_features, prompt_features)
    return logits.max(dim=1).values.mean(dim=0)


def keep_mask(scores: torch.Tensor, tau: float) -> torch.Tensor:
    """The published outlier rule: median/MAD z-score, standardised again, kept where |u| <= tau.

    torch.median gives the lower middle value, as in the published code.  Where the rule is undefined
    (zero MAD or spread, so NaN/inf) or would keep nothing, every prompt is kept.
    """
    median = scores.median()
    mad = (scores - median).abs().median()
    z = (scores - median) / mad
    u = (z - z.mean()) / z.std()
    keep = u.abs() <= tau
    undefined = ~torch.isfinite(u).all() | ~keep.any()
    return keep | undefined


def selected_prototypes(prompt_features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Renormalised mean of the kept prompts' features per class, ``[C, D]``."""
    weights = keep.to(prompt_features.dtype)
    mean = torch.einsum("p,cpd->cd", weights, prompt_features) / weights.sum()
    return F.normalize(mean, dim=-1)


def biomedcoop_losses(
    logits: torch.Tensor,
    labels: torch.Tensor,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    prompt_features: torch.Tensor,
    prototypes: torch.Tensor,
    logit_scale,
    sccm_lambda: float,
    kdsp_lambda: float,
    tau: float,
) -> Dict[str, torch.Tensor]:
    """The three loss terms (lambdas applied).  All feature inputs are L2-normalised.

    logits ``[B, C]`` = s f t^T; image_features ``[B, D]``; text_features ``[C, D]`` (learned prompts);
    prompt_features ``[C, P, D]`` (LLM prompts); prototypes ``[C, D]`` (renormalised mean of all P).
    """
    with torch.no_grad():
        keep = keep_mask(prompt_scores(image_features, prompt_features, logit_scale), tau)
        teacher_logits = logit_scale * image_features @ selected_prototypes(prompt_features, keep).t()
    ce = F.cross_entropy(logits, labels)
    sccm = sccm_lambda * F.mse_loss(text_features, prototypes)
    kl_sum = F.kl_div(
        F.log_softmax(logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="sum", log_target=True
    )
    kdsp = kdsp_lambda * kl_sum / logits.numel()
    return {"ce": ce, "sccm": sccm, "kdsp": kdsp, "n_kept": keep.sum()}


# ---------------------------------------------------------------------------------------------


class BiomedCoOp(ClipTrainer):
    """BiomedCoOp on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "BiomedCoOp"
    CONFIG_NODE = "BIOMEDCOOP"

    def build_model(self):
        cfg = self.cfg
        opts = self.opts
        classnames = self.dm.dataset.classnames
        self.build_backbone()

        print("Building the prompt learner")
        self.prompt_learner = PromptLearner(
            self.backbone,
            classnames,
            n_ctx=opts.N_CTX,
            ctx_init=opts.CTX_INIT,
            csc=opts.CSC,
            class_token_position=opts.CLASS_TOKEN_POSITION,
        ).to(self.device)
        self.prompt_learner.metadata = self.run_metadata()
        # Check the ensemble now (a missing class fails before any training); encode it lazily.
        self.llm_prompts: List[List[str]] = load_prompt_file(opts.PROMPTS or cfg.DATASET.NAME).for_classes(
            classnames, opts.N_PROMPTS
        )
        self._prompt_features = None
        self._prototypes = None

        optim = build_optimizer(self.prompt_learner, cfg.OPTIM)
        sched = build_lr_scheduler(optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, optim, sched)
        self.print_trainable_parameters()

    # -- frozen work, done once ------------------------------------------------------------------

    def teacher_features(self):
        """Normalised LLM-prompt features ``[C, P, D]`` and prototypes ``[C, D]``, in eval mode, once."""
        if self._prompt_features is None:
            n_cls, n_prompts = len(self.llm_prompts), len(self.llm_prompts[0])
            flat = [sentence for sentences in self.llm_prompts for sentence in sentences]
            features = self.encode_texts(flat).view(n_cls, n_prompts, -1)
            self._prompt_features = features
            self._prototypes = F.normalize(features.mean(dim=1), dim=-1)
        return self._prompt_features, self._prototypes

    # -- forward passes ------------------------------------------------------------------------

    def text_features(self) -> torch.Tensor:
        prompts = self.prompt_learner()
        features = self.backbone.encode_text_embeddings(prompts, self.prompt_learner.token_ids)
        return F.normalize(features.float(), dim=-1)

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.backbone.text_tower.train(mode == "train" and self.opts.TEXT_DROPOUT)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        opts = self.opts
        prompt_features, prototypes = self.teacher_features()
        scale = self.backbone.logit_scale
        image_features = self.image_features(image)
        with self.precision.autocast():
            text_features = self.text_features()
        logits = self.backbone.logits(image_features, text_features)
        losses = biomedcoop_losses(
            logits, label, image_features, text_features, prompt_features, prototypes, scale,
            opts.SCCM_LAMBDA, opts.KDSP_LAMBDA, opts.TAU,
        )
        loss = losses["ce"] + losses["sccm"] + losses["kdsp"]
        self.precision.backward_and_step(loss, self._optims["prompt_learner"])

        summary = {
            "loss": loss.item(),
            "loss_ce": losses["ce"].item(),
            "loss_sccm": losses["sccm"].item(),
            "loss_kdsp": losses["kdsp"].item(),
            "acc": compute_accuracy(logits, label)[0].item(),
        }
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    @torch.no_grad()
    def logits_from_features(self, image_features):
        def learned_text_features():
            with self.precision.autocast():
                return self.text_features()

        text_features = self.eval_constant("text_features", learned_text_features)
        return self.backbone.logits(image_features, text_features)

    # -- checkpoints -----------------------------------------------------------------------------

    def loadable_state_dict(self, name, state_dict):
        return context_state_dict(state_dict)


register_method(BiomedCoOp, PUBLISHED_ALIASES)
