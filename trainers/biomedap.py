"""BiomedAP (arXiv 2605.15736, CVPRW 2026): Biomed-DPT plus cross-modal fusion of the text context
into the visual prompt tokens, a second ("low") text anchor and an alignment loss.

What the public code does (reference/newer_methods.md §2), built on ``trainers/biomeddpt.py``:

* text context tokens x_ctx = positions 1..N_CTX of every class's prompt embeddings ``[C, n, D_t]``
  (before the text tower); with CLASS_TOKEN_POSITION ``end`` they are the shared context itself;
* before image-tower block l of FUSION_LAYERS (0-based, after the zero visual prompts are
  written), a :class:`CrossModalPromptFusion` fuses the visual prompt tokens v with a context
  x (training: x_ctx[y] of each image's label, or their class mean, see TRAIN_FUSION_CONTEXT;
  test: always the class mean, so no label is ever used at test time) and writes its visual output
  back over the prompt tokens; its text output t_out^l is kept for the alignment loss;
* loss = CE + L1_LAMBDA_HIGH * mean|t - g| + KL_LAMBDA * KL(s f g^T || s f t^T) / (B C)
  + L1_LAMBDA_LOW * mean|t - h| + ALIGNMENT_LAMBDA * mean over l of (1 - mean_b cos(mean_j t_out^l_bj,
  mean_j x_bj)), with g the LLM-ensemble anchors (as Biomed-DPT) and h_c the normalised feature of
  LOW_TEMPLATE filled with the class name (the published ``minimal`` template type is ``{}``).
  The KL target is not detached (published: its gradient reaches the fusion modules through f).

Trained: the context and the fusion modules (about 15.4 M parameters each at width 768).  The
paper's "visual prototype" low anchor and confidence-aware loss are not in the public code and are
not implemented (unverified).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.backbones.adapt import TokenHook
from clip_biomed.dassl import build_lr_scheduler, build_optimizer
from clip_biomed.method import published_names, register_method
from trainers.biomeddpt import BiomedDPT, add_dual_prompt_keys, biomeddpt_losses, replace_prompt_tokens

PUBLISHED_ALIASES = published_names("BiomedAP_{}")
FUSION_CONTEXTS = ("mean", "label")


def add_config(cfg) -> None:
    cfg.TRAINER.BIOMEDAP = CN()
    node = cfg.TRAINER.BIOMEDAP
    add_dual_prompt_keys(node)
    node.L1_LAMBDA_HIGH = 12.5
    node.L1_LAMBDA_LOW = 0.3
    node.ALIGNMENT_LAMBDA = 0.1
    # the low anchor's sentence; "{}" (the class name alone) is the published LOW_TEMPLATE_TYPE "minimal"
    # (yacs reads a "{}" written in a YAML or on the command line as a dict: leave this default out)
    node.LOW_TEMPLATE = "{}"
    node.FUSION_LAYERS = [5, 8]  # empty: no fusion (the published ENABLE_FUSION False)
    node.FUSION_HEADS = 8
    node.FUSION_DROPOUT = 0.1
    # Fusion context while training: "mean" (the class mean, as at test time) or "label" (the
    # published code: the context of each image's ground-truth class, unavailable at test time).
    node.TRAIN_FUSION_CONTEXT = "mean"
    node.DETACH_KL_TARGET = False


# ---------------------------------------------------------------------------------------------
# The method's math.


class CrossModalPromptFusion(nn.Module):
    """Fuses visual prompt tokens ``v [B, m, D_v]`` and text context tokens ``t [B, n, D_t]``:

    a_v = MHA(v, t, t), a_t = MHA(t, v, v), gates g = sigmoid(W v + b) (and for t),
    v^ = LN(v + g_v v + (1 - g_v) a_v), v_out = v^ + FFN(v^) (and t_out likewise).
    Text tokens are projected to D_v and back when the widths differ (identity otherwise).
    """

    def __init__(self, visual_dim: int, text_dim: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        d = visual_dim
        self.text_in = nn.Linear(text_dim, d) if text_dim != d else nn.Identity()
        self.text_out = nn.Linear(d, text_dim) if text_dim != d else nn.Identity()
        self.visual_to_text_attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.text_to_visual_attn = nn.MultiheadAttention(d, num_heads, dropout=dropout, batch_first=True)
        self.gate_v, self.gate_t = nn.Linear(d, d), nn.Linear(d, d)
        self.norm_v, self.norm_t = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn_v, self.ffn_t = (nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout),
                                                nn.Linear(4 * d, d), nn.Dropout(dropout)) for _ in range(2))

    def forward(self, v: torch.Tensor, t: torch.Tensor):
        t = self.text_in(t)
        a_v = self.visual_to_text_attn(v, t, t, need_weights=False)[0]
        a_t = self.text_to_visual_attn(t, v, v, need_weights=False)[0]
        gate_v, gate_t = torch.sigmoid(self.gate_v(v)), torch.sigmoid(self.gate_t(t))
        v = self.norm_v(v + gate_v * v + (1 - gate_v) * a_v)
        t = self.norm_t(t + gate_t * t + (1 - gate_t) * a_t)
        return v + self.ffn_v(v), self.text_out(t + self.ffn_t(t))


def alignment_loss(fused_text: List[torch.Tensor], context: torch.Tensor) -> torch.Tensor:
    """Mean over fusion layers of 1 - mean_b cos(mean_j fused_bj, mean_j context_bj); the tensors are
    ``[B, n, D]`` (one per layer) and the context given to the fusion ``[B, n, D]``."""
    target = context.mean(dim=1)
    return torch.stack([1 - F.cosine_similarity(out.mean(dim=1), target, dim=-1).mean()
                        for out in fused_text]).mean()


def biomedap_losses(logits, labels, text_features, high_anchors, low_anchors, teacher_logits, fused_text,
                    context, opts) -> Dict[str, torch.Tensor]:
    """The five loss terms (lambdas applied); ``fused_text`` empty (no fusion layers) gives no alignment term."""
    losses = biomeddpt_losses(logits, labels, text_features, high_anchors, teacher_logits,
                              opts.L1_LAMBDA_HIGH, opts.KL_LAMBDA)
    losses["l1_low"] = opts.L1_LAMBDA_LOW * F.l1_loss(text_features, low_anchors)
    if fused_text:
        losses["align"] = opts.ALIGNMENT_LAMBDA * alignment_loss(fused_text, context)
    return losses


# ---------------------------------------------------------------------------------------------


class BiomedAP(BiomedDPT):
    """BiomedAP on any backbone whose image tower is a ViT (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "BiomedAP"
    CONFIG_NODE = "BIOMEDAP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        context = cfg.TRAINER.BIOMEDAP.TRAIN_FUSION_CONTEXT
        if context not in FUSION_CONTEXTS:
            raise ValueError(f"TRAINER.BIOMEDAP.TRAIN_FUSION_CONTEXT must be one of {FUSION_CONTEXTS}, got {context!r}")

    def register_trainable(self) -> None:
        super().register_trainable()
        opts, depth = self.opts, self.visual_tokens.depth
        outside = [layer for layer in opts.FUSION_LAYERS if not 0 <= layer < depth]
        if outside:
            raise ValueError(f"TRAINER.BIOMEDAP.FUSION_LAYERS {list(opts.FUSION_LAYERS)}: the image tower has "
                             f"{depth} blocks (0..{depth - 1}), so {outside} do not exist")
        self.fusion = nn.ModuleDict({
            str(layer): CrossModalPromptFusion(self.visual_tokens.width, self.backbone.ctx_dim, opts.FUSION_HEADS,
                                               opts.FUSION_DROPOUT)
            for layer in opts.FUSION_LAYERS
        }).to(self.device)
        if len(self.fusion):
            optim = build_optimizer(self.fusion, self.cfg.OPTIM)
            self.register_model("fusion", self.fusion, optim, build_lr_scheduler(optim, self.cfg.OPTIM))

    def low_anchors(self) -> torch.Tensor:
        names = [name.replace("_", " ") for name in self.dm.dataset.classnames]
        return self.anchors("low", [[self.opts.LOW_TEMPLATE.format(name)] for name in names])

    def context_tokens(self, prompts: torch.Tensor) -> torch.Tensor:
        """The text context tokens of every class ``[C, n, D_t]``: prompt positions 1..N_CTX."""
        return prompts[:, 1:1 + self.prompt_learner.n_ctx]

    def fused_hooks(self, context: torch.Tensor, fused_text: List[torch.Tensor]) -> Dict[int, TokenHook]:
        """The visual-prompt hooks, followed at each fusion layer by the fusion with ``context``
        ``[B or 1, n, D_t]``; the fusion's text outputs are appended to ``fused_text``."""
        hooks = self.image_hooks()
        start, n_prompts = self.visual_tokens.prefix_tokens, self.opts.N_VISUAL_PROMPTS

        def fuse(module, write_prompts):
            def hook(tokens):
                tokens = write_prompts(tokens)
                v_out, t_out = module(tokens[:, start:start + n_prompts],
                                      context.expand(tokens.shape[0], -1, -1))
                fused_text.append(t_out)
                return replace_prompt_tokens(tokens, start, v_out)
            return hook

        for layer, module in self.fusion.items():
            hooks[int(layer)] = fuse(module, hooks[int(layer)])
        return hooks

    def losses(self, image, label):
        opts = self.opts
        prompts = self.prompt_learner()
        text_features = self.text_features_of(prompts)
        context = self.context_tokens(prompts)
        if opts.TRAIN_FUSION_CONTEXT == "label":
            context = context[label]
        else:
            context = context.mean(dim=0, keepdim=True).expand(image.shape[0], -1, -1)
        fused_text: List[torch.Tensor] = []
        image_features = self.prompted_image_features(image, self.fused_hooks(context, fused_text))
        logits = self.backbone.logits(image_features, text_features)
        teacher_logits = self.backbone.logit_scale * image_features @ self.high_anchors().t()
        if opts.DETACH_KL_TARGET:
            teacher_logits = teacher_logits.detach()
        return biomedap_losses(logits, label, text_features, self.high_anchors(), self.low_anchors(),
                               teacher_logits, fused_text, context, opts), logits

    def inference_hooks(self) -> Dict[int, TokenHook]:
        context = self.eval_constant("fusion_context",
                                     lambda: self.context_tokens(self.prompt_learner()).mean(dim=0, keepdim=True))
        return self.fused_hooks(context, [])

    def loadable_state_dict(self, name, state_dict):
        if name == "fusion":
            unexpected = sorted(set(state_dict) - set(self.fusion.state_dict()))
            if unexpected:
                raise KeyError(f"the fusion checkpoint holds modules this run does not have ({', '.join(unexpected[:4])}"
                               f" ...): was it trained with other TRAINER.BIOMEDAP.FUSION_LAYERS than "
                               f"{list(self.opts.FUSION_LAYERS)}?")
        return super().loadable_state_dict(name, state_dict)


register_method(BiomedAP, PUBLISHED_ALIASES)
