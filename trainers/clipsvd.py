"""CLIP-SVD (arXiv 2509.03740, TMLR 2026): fine-tune only the singular values of the towers' linear layers.

Each selected frozen weight W (out x in) is decomposed once, W = U diag(sigma_0) V^T (fp32, full
rank r = min(out, in)), and the layer becomes y = U diag(sigma) V^T x + b with only sigma trainable,
initialised to sigma_0 (reference/newer_methods.md §3).  It is computed as (W + U diag(sigma -
sigma_0) V^T) x + b: the same function, and bit-for-bit the frozen layer at initialisation.

Selected, as published: in every block of both towers q, k, v (timm's fused qkv split into three),
the attention output and the two MLP layers, so on BiomedCLIP 12 x 6 x 768 per tower = 110,592
singular values (CTKidney base-to-novel: blocks 4-11, 73,728).  The published code also decomposes
every other Linear but leaves it frozen, which computes the same function; here only the trained
ones are decomposed.  Loss: cross-entropy on a hand-written template; AdamW, batch 32, flip
augmentation, per-iteration cosine to 1e-6 (``clip_biomed/tower_tuning.py``).

Fixed defect: the published cosine schedule counts T_max in epochs but steps every iteration, so
with several batches per epoch the LR reaches its minimum early and rises again.  Here T_max is
the run's number of iterations; ``T_MAX_IN_EPOCHS True`` reproduces the published schedule.  Also
fixed: the published attention rewrite that newer timm versions break (qkv is split without
touching timm's attention), its undefined ``VALIDATION`` crash, and its own few-shot sampler (this
project's sampler gives every method the same draws).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.backbones.adapt import LinearWrapper
from clip_biomed.method import register_method
from clip_biomed.tower_tuning import TowerTuningTrainer, add_tower_tuning_keys


def add_config(cfg) -> None:
    cfg.TRAINER.CLIPSVD = CN()
    add_tower_tuning_keys(cfg.TRAINER.CLIPSVD, params=("q", "k", "v", "o", "fc1", "fc2"))
    # True: the published schedule, T_max = OPTIM.MAX_EPOCH although the cosine is stepped per iteration
    cfg.TRAINER.CLIPSVD.T_MAX_IN_EPOCHS = False


class SingularValueLinear(LinearWrapper):
    """A frozen Linear whose singular values ``sigma`` are the only trainable tensor."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear)
        u, s, vh = torch.linalg.svd(self.weight.float(), full_matrices=False)
        self.register_buffer("u", u, persistent=False)
        self.register_buffer("vh", vh, persistent=False)
        self.register_buffer("sigma_0", s.clone(), persistent=False)
        self.sigma = nn.Parameter(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the update in float32 even under autocast: small singular-value steps would round away in fp16
        with torch.autocast(self.u.device.type, enabled=False):
            weight = self.weight.float() + (self.u * (self.sigma - self.sigma_0)) @ self.vh
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight.to(x.dtype), bias)


class CLIPSVD(TowerTuningTrainer):
    """CLIP-SVD on any backbone with tower layouts (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "CLIPSVD"
    CONFIG_NODE = "CLIPSVD"

    def wrap_linear(self, linear):
        return SingularValueLinear(linear)

    def schedule_length(self) -> int:
        return self.max_epoch if self.opts.T_MAX_IN_EPOCHS else super().schedule_length()


register_method(CLIPSVD, {})
