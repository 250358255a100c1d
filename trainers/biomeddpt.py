"""Biomed-DPT (arXiv 2505.05189): dual prompts, a learned context inside a per-dataset clinical
sentence distilled towards an LLM prompt ensemble, plus zero "visual prompt" tokens in the image tower.

Math (reference/newer_methods.md §1), with f the normalised image features (visual prompts applied),
t_c the normalised features of the learned prompt of class c, g_c the renormalised mean of the
normalised features of class c's first N_PROMPTS LLM sentences (frozen text tower, eval mode,
computed once) and s the backbone's logit scale:

* prompt of class c: ``TEMPLATE`` filled with the class name (e.g. ``a MR photo of a {} in the
  brain.``), its first N_CTX tokens replaced by the shared context (initialised from CTX_INIT);
* loss = CE(s f t^T, y) + L1_LAMBDA * mean|t - g| + KL_LAMBDA * KL(softmax(s f g^T) || softmax(s f t^T)) / (B C);
* visual prompts: before every image-tower block the N_VISUAL_PROMPTS (4) tokens after the CLS
  token are set to zero.  The published code *overwrites* the first four patch tokens this way
  (``VISUAL_PROMPTS overwrite``, the default, which reproduces its numbers); ``insert`` adds four
  zero tokens after the CLS token instead (what the abstract describes) and removes them after the
  last block.  Nothing in the image path trains (the published prompts are zero tensors, not
  parameters, and dropout on zeros is zero), so only the context is learned and checkpointed.

Inference: s f t^T.  Defects of the published code fixed here (docs/newer_methods.md): the class
tokens ``middle`` moves are the class name's (``MOVE_ONE_TOKEN True``: the published single token),
CLASS_TOKEN_POSITION and N_CTX are what the config says, AMP works, no hard-coded ``.cuda()``, a
missing checkpoint fails.  BiomedAP (``trainers/biomedap.py``) is built on this trainer.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_biomed.backbones.adapt import ImageTokens, TokenHook, image_token_hooks, image_tokens
from clip_biomed.dassl import build_lr_scheduler, build_optimizer, compute_accuracy
from clip_biomed.method import ClipTrainer, published_names, register_method
from clip_biomed.prompt_learner import PromptLearner, context_state_dict
from clip_biomed.prompts import load_prompt_file

PUBLISHED_ALIASES = published_names("BiomedDPT_{}")
VISUAL_PROMPT_MODES = ("overwrite", "insert")


def add_dual_prompt_keys(node: CN) -> None:
    """The keys Biomed-DPT and BiomedAP share (defaults: the generic values; YAMLs set the published ones)."""
    node.TEMPLATE = "a photo of a {}."  # the clinical sentence; the context replaces its first N_CTX tokens
    node.CTX_INIT = "a photo of a"
    node.N_CTX = 4
    node.CSC = False
    node.CLASS_TOKEN_POSITION = "end"
    # middle/front: move the single token after the context (published) instead of the class name
    node.MOVE_ONE_TOKEN = False
    node.N_PROMPTS = 50
    # Prompt-ensemble JSON: empty = the packaged file for DATASET.NAME, else a path or dataset name.
    node.PROMPTS = ""
    node.KL_LAMBDA = 0.25
    node.VISUAL_PROMPTS = "overwrite"  # overwrite | insert (see the module docstring)
    node.N_VISUAL_PROMPTS = 4
    node.PREC = "fp32"
    # The published trainer keeps the text tower in train mode (dropout on) while training.
    node.TEXT_DROPOUT = True


def add_config(cfg) -> None:
    cfg.TRAINER.BIOMEDDPT = CN()
    add_dual_prompt_keys(cfg.TRAINER.BIOMEDDPT)
    cfg.TRAINER.BIOMEDDPT.L1_LAMBDA = 12.5


# ---------------------------------------------------------------------------------------------
# The method's math, as pure functions of tensors (tested against an independent computation).


def kl_to_teacher(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(1 / (B C)) * sum over (b, c) of p0 (log p0 - log p), p = softmax(logits), p0 = softmax(teacher)."""
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(teacher_logits, dim=1), reduction="sum",
                    log_target=True) / logits.numel()


def biomeddpt_losses(logits, labels, text_features, anchors, teacher_logits, l1_lambda: float,
                     kl_lambda: float) -> Dict[str, torch.Tensor]:
    """CE, the L1 pull of the prompts' features ``[C, D]`` towards the LLM anchors ``[C, D]``, and
    the KL from the anchor classifier's logits to the prompts' logits (lambdas applied)."""
    return {
        "ce": F.cross_entropy(logits, labels),
        "l1": l1_lambda * F.l1_loss(text_features, anchors),
        "kl": kl_lambda * kl_to_teacher(logits, teacher_logits),
    }


def replace_prompt_tokens(tokens: torch.Tensor, start: int, prompts: torch.Tensor) -> torch.Tensor:
    """``tokens`` ``[B, N, D]`` with positions ``start .. start + len(prompts)`` replaced by ``prompts``."""
    n = prompts.shape[1]
    return torch.cat([tokens[:, :start], prompts.to(tokens.dtype), tokens[:, start + n:]], dim=1)


def zero_prompt_hooks(image: ImageTokens, n_prompts: int, mode: str) -> Dict[int, TokenHook]:
    """Token hooks writing ``n_prompts`` zero tokens after the prefix (CLS) tokens before every block:
    over the first patch tokens (``overwrite``), or into tokens inserted before block 0 and removed
    after the last block (``insert``)."""
    start = image.prefix_tokens

    def zeros(tokens):
        return tokens.new_zeros(tokens.shape[0], n_prompts, tokens.shape[2])

    def overwrite(tokens):
        return replace_prompt_tokens(tokens, start, zeros(tokens))

    hooks = {block: overwrite for block in range(image.depth)}
    if mode == "insert":
        hooks[0] = lambda tokens: torch.cat([tokens[:, :start], zeros(tokens), tokens[:, start:]], dim=1)
        hooks[image.depth] = lambda tokens: torch.cat([tokens[:, :start], tokens[:, start + n_prompts:]], dim=1)
    return hooks


# ---------------------------------------------------------------------------------------------


class BiomedDPT(ClipTrainer):
    """Biomed-DPT on any backbone whose image tower is a ViT (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "BiomedDPT"
    CONFIG_NODE = "BIOMEDDPT"
    FROZEN_IMAGE_FEATURES = False  # the visual prompts change the image features

    @property
    def node_name(self) -> str:
        return f"TRAINER.{self.CONFIG_NODE}"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        mode = cfg.TRAINER[self.CONFIG_NODE].VISUAL_PROMPTS
        if mode not in VISUAL_PROMPT_MODES:
            raise ValueError(f"TRAINER.{self.CONFIG_NODE}.VISUAL_PROMPTS must be one of {VISUAL_PROMPT_MODES}, "
                             f"got {mode!r}")

    def build_model(self):
        cfg, opts = self.cfg, self.opts
        classnames = self.dm.dataset.classnames
        self.build_backbone()
        self.visual_tokens = image_tokens(self.backbone)  # an error for image towers without token blocks

        print("Building the prompt learner")
        self.prompt_learner = PromptLearner(
            self.backbone, classnames, n_ctx=opts.N_CTX, ctx_init=opts.CTX_INIT, csc=opts.CSC,
            class_token_position=opts.CLASS_TOKEN_POSITION, template=opts.TEMPLATE,
            move_one_token=opts.MOVE_ONE_TOKEN,
        ).to(self.device)
        self.prompt_learner.metadata = self.run_metadata()
        # Check the ensemble now (a missing class fails before any training); encode it lazily.
        ensemble = load_prompt_file(opts.PROMPTS or cfg.DATASET.NAME, self.node_name)
        self.llm_prompts = ensemble.for_classes(classnames, opts.N_PROMPTS, self.node_name)
        self._anchors: Dict[str, torch.Tensor] = {}
        self.register_trainable()
        self.print_trainable_parameters()

    def register_trainable(self) -> None:
        optim = build_optimizer(self.prompt_learner, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    # -- frozen work, done once ------------------------------------------------------------------

    def anchors(self, key: str, sentences: Sequence[Sequence[str]]) -> torch.Tensor:
        """Renormalised mean of the normalised features of each class's sentences ``[C, D]`` (eval
        mode, computed once per ``key``)."""
        if key not in self._anchors:
            flat = [sentence for per_class in sentences for sentence in per_class]
            features = self.encode_texts(flat).view(len(sentences), len(sentences[0]), -1)
            self._anchors[key] = F.normalize(features.mean(dim=1), dim=-1)
        return self._anchors[key]

    def high_anchors(self) -> torch.Tensor:
        return self.anchors("llm", self.llm_prompts)

    # -- forward passes ------------------------------------------------------------------------

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self.backbone.text_tower.train(mode == "train" and self.opts.TEXT_DROPOUT)

    def text_features_of(self, prompts: torch.Tensor) -> torch.Tensor:
        features = self.backbone.encode_text_embeddings(prompts, self.prompt_learner.token_ids)
        return F.normalize(features.float(), dim=-1)

    def image_hooks(self) -> Dict[int, TokenHook]:
        return zero_prompt_hooks(self.visual_tokens, self.opts.N_VISUAL_PROMPTS, self.opts.VISUAL_PROMPTS)

    def inference_hooks(self) -> Dict[int, TokenHook]:
        return self.image_hooks()

    def prompted_image_features(self, images: torch.Tensor, hooks: Dict[int, TokenHook]) -> torch.Tensor:
        with image_token_hooks(self.backbone, hooks):
            return F.normalize(self.backbone.encode_image(images).float(), dim=-1)

    def losses(self, image, label):
        """The loss terms of one batch and its logits."""
        opts = self.opts
        text_features = self.text_features_of(self.prompt_learner())
        image_features = self.prompted_image_features(image, self.image_hooks())
        logits = self.backbone.logits(image_features, text_features)
        teacher_logits = self.backbone.logit_scale * image_features @ self.high_anchors().t()
        return biomeddpt_losses(logits, label, text_features, self.high_anchors(), teacher_logits,
                                opts.L1_LAMBDA, opts.KL_LAMBDA), logits

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        with self.precision.autocast():
            losses, logits = self.losses(image, label)
        loss = sum(losses.values())
        self.precision.backward_and_step(loss, [self._optims[name] for name in self.get_model_names()])
        summary = {"loss": loss.item(), **{f"loss_{key}": value.item() for key, value in losses.items()},
                   "acc": compute_accuracy(logits, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    @torch.no_grad()
    def model_inference(self, images):
        """Logits of test images: no labels are used (BiomedAP fuses with the class-mean context)."""
        text_features = self.eval_constant("text_features", lambda: self.text_features_of(self.prompt_learner()))
        with self.precision.autocast():
            image_features = self.prompted_image_features(images, self.inference_hooks())
        return self.backbone.logits(image_features, text_features)

    # -- checkpoints -----------------------------------------------------------------------------

    def loadable_state_dict(self, name, state_dict):
        return context_state_dict(state_dict) if name == "prompt_learner" else state_dict


register_method(BiomedDPT, PUBLISHED_ALIASES)

