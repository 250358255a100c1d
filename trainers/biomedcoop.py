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

The published code has one trainer per backbone, and two of its result-changing behaviours differ
between them (§1.8): the PMC-CLIP trainer prunes prompts with the *absolute* median/MAD z-score, and
every trainer puts its whole model in train mode, so a ResNet image tower (PMC-CLIP, OpenAI CLIP
RN50...) trains with BatchNorm batch statistics while its running statistics drift.  ``ZSCORE`` and
``IMAGE_BN`` reproduce them per backbone family by default ("auto") and switch them off by name.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.method import published_names, register_method
from clip_biomed.prompts import sentences_for

from .coop import CoOp

# Published trainer names and the backbone each one fixes (their YAMLs say ViT-B/16 for all of them).
PUBLISHED_ALIASES = published_names("BiomedCoOp_{}")


class PublishedVariant(NamedTuple):
    """What the published trainer of a backbone family does (reference/biomedcoop.md §1.8)."""

    zscore: str             # "signed" or "absolute" median/MAD z-score in the pruning rule
    image_bn: str           # "train" when its image tower's BatchNorm layers run in train mode
    image_passes: int       # image-tower passes per step, i.e. running-statistics updates per step


# BiomedCLIP's published trainer is in train mode too, but its ViT has no BatchNorm; other models of
# that family have no published trainer, so they get the corrected "eval".  The CLIP/PubMedCLIP
# trainers run the main image tower once per step (the teacher uses a copy), PMC-CLIP's twice.
PUBLISHED_VARIANTS = {
    "biomedclip": PublishedVariant("signed", "eval", 1),
    "clip": PublishedVariant("signed", "train", 1),
    "pmcclip": PublishedVariant("absolute", "train", 2),
}
ZSCORE_CHOICES = ("auto", "signed", "absolute")
IMAGE_BN_MODEL = "image_bn"  # registered model (and run sub-folder) of the drifting BatchNorm layers
IMAGE_BN_CHOICES = ("auto", "eval", "train")


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
    # Prompt-pruning z-score: "signed" (S - m) / MAD, or "absolute" |S - m| / MAD (the published
    # PMC-CLIP trainer's).  "auto": as the published trainer of the backbone's family.
    cfg.TRAINER.BIOMEDCOOP.ZSCORE = "auto"
    # The image tower's BatchNorm layers while training: "eval" (frozen statistics, as a frozen tower
    # should be) or "train" (batch statistics; running statistics drift and are saved with the
    # context, as the published PMC-CLIP and CLIP trainers do).  "auto": as the published trainer.
    cfg.TRAINER.BIOMEDCOOP.IMAGE_BN = "auto"


# ---------------------------------------------------------------------------------------------
# The method's math, as pure functions of tensors (tested against an independent computation).


def prompt_scores(image_features: torch.Tensor, prompt_features: torch.Tensor, logit_scale) -> torch.Tensor:
    """S_p = mean over the batch of the max class logit when only prompt p is the classifier. ``[P]``."""
    logits = logit_scale * torch.einsum("bd,cpd->bcp", image_features, prompt_features)
    return logits.max(dim=1).values.mean(dim=0)


def keep_mask(scores: torch.Tensor, tau: float, absolute: bool = False) -> torch.Tensor:
    """The published outlier rule: median/MAD z-score, standardised again, kept where |u| <= tau.

    ``absolute``: the z-score is |S - m| / MAD (published PMC-CLIP trainer) instead of (S - m) / MAD.
    With the signed score the rule equals a plain z-score threshold on S; with the absolute one it
    drops prompts whose distance from the median is far from the average distance.
    torch.median gives the lower middle value, as in the published code.  Where the rule is undefined
    (zero MAD or spread, so NaN/inf) or would keep nothing, every prompt is kept.
    """
    median = scores.median()
    deviation = scores - median
    mad = deviation.abs().median()
    z = (deviation.abs() if absolute else deviation) / mad
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
    absolute_zscore: bool = False,
) -> Dict[str, torch.Tensor]:
    """The three loss terms (lambdas applied).  All feature inputs are L2-normalised.

    logits ``[B, C]`` = s f t^T; image_features ``[B, D]``; text_features ``[C, D]`` (learned prompts);
    prompt_features ``[C, P, D]`` (LLM prompts); prototypes ``[C, D]`` (renormalised mean of all P);
    absolute_zscore: the pruning rule of ``keep_mask``.
    """
    with torch.no_grad():
        keep = keep_mask(prompt_scores(image_features, prompt_features, logit_scale), tau, absolute_zscore)
        teacher_logits = logit_scale * image_features @ selected_prototypes(prompt_features, keep).t()
    ce = F.cross_entropy(logits, labels)
    sccm = sccm_lambda * F.mse_loss(text_features, prototypes)
    kl_sum = F.kl_div(
        F.log_softmax(logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="sum", log_target=True
    )
    kdsp = kdsp_lambda * kl_sum / logits.numel()
    return {"ce": ce, "sccm": sccm, "kdsp": kdsp, "n_kept": keep.sum()}


# ---------------------------------------------------------------------------------------------


class BiomedCoOp(CoOp):
    """BiomedCoOp on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP): CoOp's context learning
    with the SCCM and KDSP terms of the LLM prompt ensemble."""

    METHOD = "BiomedCoOp"
    CONFIG_NODE = "BIOMEDCOOP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        for key, choices in (("ZSCORE", ZSCORE_CHOICES), ("IMAGE_BN", IMAGE_BN_CHOICES)):
            if cfg.TRAINER.BIOMEDCOOP[key] not in choices:
                raise ValueError(f"TRAINER.BIOMEDCOOP.{key} must be one of {', '.join(choices)}, "
                                 f"got {cfg.TRAINER.BIOMEDCOOP[key]!r}")

    def build_model(self):
        super().build_model()  # the backbone and the registered prompt learner
        self.apply_published_variant()
        if self.image_batchnorm is not None:
            # Registered (no optimizer), so the engine switches it with the model mode and its drifted
            # running statistics are checkpointed, resumed and loaded with the context.
            self.register_model(IMAGE_BN_MODEL, self.image_batchnorm)
        # Check the ensemble now (a missing class fails before any training); encode it lazily.
        opts, classnames = self.opts, self.dm.dataset.classnames
        dataset_name = getattr(self.dm.dataset, "dataset_name", self.cfg.DATASET.NAME)  # FolderDataset: FOLDER.NAME
        self.llm_prompts: List[List[str]] = sentences_for(opts.PROMPTS, dataset_name, classnames, opts.N_PROMPTS)

    def apply_published_variant(self):
        """Resolve ZSCORE and IMAGE_BN ("auto": as the published trainer of the backbone's family)."""
        opts = self.opts
        published = PUBLISHED_VARIANTS.get(self.backbone.family, PUBLISHED_VARIANTS["biomedclip"])
        self.zscore = published.zscore if opts.ZSCORE == "auto" else opts.ZSCORE
        image_bn = published.image_bn if opts.IMAGE_BN == "auto" else opts.IMAGE_BN
        layers = [m for m in self.backbone.image_tower.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.image_batchnorm = None
        if image_bn == "train" and layers:
            for layer in layers:
                # k passes over the same batch per step move the statistics as one pass with this momentum
                if layer.momentum is not None:
                    layer.momentum = 1 - (1 - layer.momentum) ** published.image_passes
            self.image_batchnorm = nn.ModuleList(layers)
            # The image features now depend on the batch and on the drifted statistics: evaluation
            # encodes the images with the current statistics, never frozen (cached) features.
            self.FROZEN_IMAGE_FEATURES = False
        print(f"Prompt pruning z-score: {self.zscore}; image tower BatchNorm: "
              + ("train (batch statistics, running statistics drift, as the published trainer)"
                 if self.image_batchnorm is not None else "eval" if layers else "none in this image tower"))

    # -- frozen work, done once ------------------------------------------------------------------

    def teacher_features(self):
        """Normalised LLM-prompt features ``[C, P, D]`` and prototypes ``[C, D]``, in eval mode, once."""
        def encode():
            n_cls, n_prompts = len(self.llm_prompts), len(self.llm_prompts[0])
            flat = [sentence for sentences in self.llm_prompts for sentence in sentences]
            features = self.encode_texts(flat).view(n_cls, n_prompts, -1)
            return features, F.normalize(features.mean(dim=1), dim=-1)

        return self.run_constant("teacher_features", encode)

    # -- training --------------------------------------------------------------------------------

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.backbone.text_tower.train(mode == "train" and self.opts.TEXT_DROPOUT)

    def losses(self, logits, labels, image_features, text_features) -> Dict[str, torch.Tensor]:
        opts = self.opts
        prompt_features, prototypes = self.teacher_features()
        losses = biomedcoop_losses(
            logits, labels, image_features, text_features, prompt_features, prototypes, self.backbone.logit_scale,
            opts.SCCM_LAMBDA, opts.KDSP_LAMBDA, opts.TAU, absolute_zscore=self.zscore == "absolute",
        )
        return {name: losses[name] for name in ("ce", "sccm", "kdsp")}

    # -- checkpoints -----------------------------------------------------------------------------

    def loadable_state_dict(self, name, state_dict):
        if name == IMAGE_BN_MODEL:
            expected = set(self.image_batchnorm.state_dict())
            if set(state_dict) != expected:
                raise KeyError(f"The {IMAGE_BN_MODEL} checkpoint does not hold the BatchNorm statistics of this "
                               f"backbone's image tower ({len(state_dict)} entries, {len(expected)} expected): "
                               "was it trained with another backbone?")
            return state_dict
        return super().loadable_state_dict(name, state_dict)


register_method(BiomedCoOp, PUBLISHED_ALIASES)
