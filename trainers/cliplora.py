"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024): low-rank updates of the attention projections of both towers.

Each selected frozen Linear y = W x + b becomes y = W x + b + (alpha / sqrt(r)) B A dropout(x) with
A (r x in) initialised kaiming-uniform(a = sqrt(5)) and B (out x r) zero, so the layer starts as the
frozen one (reference/newer_methods.md §4).  Published settings: q, k, v of every block of both
towers, r = 2, alpha = 1 (scale 1/sqrt(2): the code divides by sqrt(r), not r), dropout 0.25 on the
branch input, AdamW lr 2e-4 with weight decay 1e-2, batch 32, flip augmentation, fp16 autocast with a
gradient scaler (``PREC amp``), and 500 * K iterations for K shots with a per-iteration cosine to
1e-6 (``clip_biomed/tower_tuning.py``).  On BiomedCLIP (not in the public repository) q/k/v are the
three thirds of timm's fused qkv and PubMedBERT's query/key/value: 221,184 parameters; on CLIP
ViT-B/16 184,320.  The branch is computed unmerged (the same function as merging B A into W).

Run length: ``ITERATIONS_PER_SHOT`` * K iterations rounded up to whole epochs of the loader (at most
one epoch more than published; 0 = OPTIM.MAX_EPOCH epochs).  Logit scale: the backbone's own
(OpenAI CLIP's is 100, the published constant); ``LOGIT_SCALE 100`` fixes it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.backbones.adapt import LinearWrapper
from clip_biomed.method import register_method
from clip_biomed.tower_tuning import TowerTuningTrainer, add_tower_tuning_keys


def add_config(cfg) -> None:
    cfg.TRAINER.CLIPLORA = CN()
    node = cfg.TRAINER.CLIPLORA
    add_tower_tuning_keys(node, params=("q", "k", "v"))
    node.RANK = 2
    node.ALPHA = 1.0
    node.DROPOUT = 0.25
    node.ITERATIONS_PER_SHOT = 500  # the run trains this many iterations per shot (0: OPTIM.MAX_EPOCH epochs)


class LoRALinear(LinearWrapper):
    """A frozen Linear plus a trainable rank-``rank`` update ``lora_B @ lora_A`` scaled by alpha/sqrt(rank)."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__(linear)
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        self.scale = alpha / math.sqrt(rank)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        frozen = F.linear(x, self.weight.to(x.dtype), bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return frozen + self.scale * update


class CLIPLoRA(TowerTuningTrainer):
    """CLIP-LoRA on any backbone with tower layouts (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "CLIPLoRA"
    CONFIG_NODE = "CLIPLORA"

    def wrap_linear(self, linear):
        opts = self.opts
        return LoRALinear(linear, opts.RANK, opts.ALPHA, opts.DROPOUT)

    def run_epochs(self) -> int:
        shots, per_shot = self.cfg.DATASET.NUM_SHOTS, self.opts.ITERATIONS_PER_SHOT
        if per_shot <= 0 or shots < 1:
            return super().run_epochs()
        batches = len(self.train_loader_x)
        epochs = math.ceil(per_shot * shots / batches)
        print(f"CLIP-LoRA budget: {per_shot} x {shots} shots = {per_shot * shots} iterations, {epochs} epochs of "
              f"{batches} batch(es) (OPTIM.MAX_EPOCH is not used; TRAINER.CLIPLORA.ITERATIONS_PER_SHOT 0 uses it)")
        return epochs


register_method(CLIPLoRA, {})
