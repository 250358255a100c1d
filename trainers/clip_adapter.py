"""CLIP-Adapter (Gao et al., 2021) on frozen features, as the BiomedCoOp repository runs it.

Logits (reference/biomedcoop.md §2.1): s * (alpha * A(f) + (1 - alpha) * f) W^T, with f the
normalised image feature, A a bias-free bottleneck MLP D -> D/4 -> D with a ReLU after each layer,
W the normalised features of "a photo of a {class}.", s the backbone's logit scale; the mix is not
renormalised.  Only A trains: cross-entropy, plain SGD (no momentum, no weight decay), LR 0.01 on a
cosine schedule after one constant warm-up epoch at 1e-5 (``OPTIM.*``), ``OPTIM.MAX_EPOCH`` 20 epochs
of batches of 32; epoch e trains on augmented view e of the few-shot images (feature_trainer.py).
The validation accuracy is measured after every epoch.

Fixes of the published code (§9 row 15), each with the key that restores the published behaviour:

* the LR schedule steps once per epoch, as configured (T_max = MAX_EPOCH epochs).  The published
  code steps it after every batch, so T_max counts batches and the LR cycles:
  ``TRAINER.CLIPADAPTER.LR_PER_ITERATION True``;
* the adapter of the epoch with the best validation accuracy (the first one on ties) is the one
  tested; the published code saves it and then tests the last epoch's:
  ``TRAINER.CLIPADAPTER.SELECT_BEST_VAL False``;
* any backbone works: the adapter is as wide as the backbone's features and the scale is the
  backbone's (the published PMC-CLIP variant crashed on both).

The published alpha search (``search_alpha_ca``, off in every published config) is not provided.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.dassl import build_lr_scheduler, build_optimizer
from clip_biomed.feature_trainer import BestOnVal, FeatureTrainer
from clip_biomed.method import published_names, register_method


def add_config(cfg) -> None:
    """TRAINER.CLIPADAPTER keys (published CLIP_Adapter/few_shot.yaml, reference §3.4)."""
    cfg.TRAINER.CLIPADAPTER = CN()
    cfg.TRAINER.CLIPADAPTER.PREC = "fp32"
    cfg.TRAINER.CLIPADAPTER.ALPHA = 0.5      # alpha_ca: weight of the adapted feature
    cfg.TRAINER.CLIPADAPTER.REDUCTION = 4    # bottleneck width D / REDUCTION
    cfg.TRAINER.CLIPADAPTER.SELECT_BEST_VAL = True    # False: test the last epoch's adapter (published)
    cfg.TRAINER.CLIPADAPTER.LR_PER_ITERATION = False  # True: step the schedule every batch (published)


class Adapter(nn.Module):
    """Bias-free bottleneck MLP with a ReLU after each layer."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(inplace=True),
            nn.Linear(dim // reduction, dim, bias=False), nn.ReLU(inplace=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)


def adapter_logits(adapter: nn.Module, features: torch.Tensor, text_features: torch.Tensor, scale,
                   alpha: float) -> torch.Tensor:
    """s * (alpha * A(f) + (1 - alpha) * f) W^T, ``[B, C]``."""
    mixed = alpha * adapter(features) + (1 - alpha) * features
    return scale * mixed @ text_features.t()


class ClipAdapter(FeatureTrainer):
    """CLIP-Adapter on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "ClipAdapter"
    CONFIG_NODE = "CLIPADAPTER"
    HEAD_NAME = "adapter"

    def build_head(self):
        return Adapter(self.backbone.embed_dim, self.opts.REDUCTION)

    def logits_from_features(self, image_features):
        return adapter_logits(self.head, image_features, self.text_weights(), self.scale(), self.opts.ALPHA)

    def fit(self):
        cfg, opts = self.cfg, self.opts
        labels = self.train_labels()
        optim = build_optimizer(self.head, cfg.OPTIM)
        sched = build_lr_scheduler(optim, cfg.OPTIM)
        best = BestOnVal()
        epochs = cfg.OPTIM.MAX_EPOCH
        for epoch in range(epochs):
            features = self.train_view(epoch)
            losses, lrs = [], []
            for index in self.minibatches(len(labels), cfg.DATALOADER.TRAIN_X.BATCH_SIZE):
                loss = F.cross_entropy(self.logits_from_features(features[index]), labels[index])
                optim.zero_grad()
                loss.backward()
                lrs.append(optim.param_groups[0]["lr"])
                optim.step()
                if opts.LR_PER_ITERATION:
                    sched.step()
                losses.append(loss.item())
            if not opts.LR_PER_ITERATION:
                sched.step()
            correct = self.val_correct(self.logits_from_features)
            best.offer(correct, self.head)
            self.log_epoch("adapter", epoch, epochs, losses, lrs, correct)
        if opts.SELECT_BEST_VAL:
            print(f"Deploying the adapter with the best val accuracy ({best.score} correct)")
            best.restore(self.head)


register_method(ClipAdapter, published_names("ClipAdapter_{}"))
