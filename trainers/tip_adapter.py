"""Tip-Adapter (training-free) and Tip-Adapter-F (Zhang et al., 2022), as the BiomedCoOp repository
runs them (reference/biomedcoop.md §2.1).

Cache model: keys K ``[N, D]`` = the normalised mean over ``AUGMENT_EPOCH`` augmented views (views
0..A-1, feature_trainer.py) of the N few-shot training features; values V = one-hot labels ``[N, C]``.
Logits of a normalised image feature f:

    s * f W^T + alpha * exp(-(beta - beta * f K^T)) V

with W the normalised features of "a photo of a {class}." and s the backbone's logit scale.
beta and alpha are searched on the validation set over the grids i * (SCALE - 0.1) / STEPS + 0.1,
i = 0..STEPS-1 (200 x 200 values from 0.1 to 49.75), keeping the first best in beta-major order.

* ``TIPAdapterTrainingFree``: the cache model as built, then the search (published ``finetune False``).
* ``TIPAdapter`` (published name ``TIPAdapter_<backbone>``, what the published scripts run): K is
  fine-tuned (AdamW, LR ``OPTIM.LR`` 0.001, eps 1e-4, weight decay 0.01, cosine over all batches,
  ``OPTIM.MAX_EPOCH`` 20 epochs of batches of 256; epoch e trains on view A + e) with beta =
  INIT_BETA.  With ``GRID_SEARCH`` the initial alpha is chosen first: for alpha0 = 0..INIT_ALPHA_SCALE-1
  a fresh adapter is fine-tuned from K with alpha0 and scored on val; the best one (its alpha0 and
  weights) is then fine-tuned again, the epoch with the best val accuracy is kept, and beta/alpha are
  searched for it.

Fixes of the published code (§9 row 14):

* the adapter the optimiser updates is the one evaluated: each grid-search adapter starts from a
  copy of K, and the fine-tuning after the grid search trains the selected adapter.  The published
  adapters all share K's storage (each grid-search run continues from the previous one's weights)
  and its final loop steps an optimiser bound to an adapter no longer in use, so the selected
  adapter is never fine-tuned again: ``TRAINER.TIPADAPTER.PUBLISHED_GRID_SEARCH True``;
* s is the backbone's logit scale; the published code hard-codes 85.2323 for BiomedCLIP and
  PMC-CLIP (whose own scale is exp(4.4292) = 83.86) and 100 for CLIP/PubMedCLIP:
  ``TRAINER.TIPADAPTER.LOGIT_SCALE 85.2323`` reproduces it.

With AUGMENT_EPOCH > 1 the keys average the normalised view features (the published code averages
unnormalised ones; the same for the published AUGMENT_EPOCH 1).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.feature_trainer import BestOnVal, FeatureTrainer
from clip_biomed.method import published_names, register_method


def add_config(cfg) -> None:
    """TRAINER.TIPADAPTER keys (published TiP_Adapter/few_shot.yaml, reference §3.4)."""
    cfg.TRAINER.TIPADAPTER = CN()
    cfg.TRAINER.TIPADAPTER.PREC = "fp32"
    cfg.TRAINER.TIPADAPTER.AUGMENT_EPOCH = 1        # augmented views averaged into the cache keys
    cfg.TRAINER.TIPADAPTER.INIT_BETA = 1.0
    cfg.TRAINER.TIPADAPTER.INIT_ALPHA = 1.0
    cfg.TRAINER.TIPADAPTER.SEARCH_SCALE = [50.0, 50.0]  # beta, alpha search ranges
    cfg.TRAINER.TIPADAPTER.SEARCH_STEP = [200, 200]
    cfg.TRAINER.TIPADAPTER.GRID_SEARCH = True       # Tip-Adapter-F: choose the initial alpha on val
    cfg.TRAINER.TIPADAPTER.INIT_ALPHA_SCALE = 10    # initial alphas 0..INIT_ALPHA_SCALE-1
    cfg.TRAINER.TIPADAPTER.ADAM_EPS = 1e-4
    cfg.TRAINER.TIPADAPTER.LOGIT_SCALE = 0.0        # 0: the backbone's; the published code: 85.2323 or 100
    cfg.TRAINER.TIPADAPTER.PUBLISHED_GRID_SEARCH = False  # True: the published shared-adapter grid search


def tip_logits(features, keys, values, text_features, scale, beta, alpha) -> torch.Tensor:
    """s f W^T + alpha exp(-(beta - beta f K^T)) V, ``[B, C]`` (the published order of operations)."""
    affinity = features @ keys.t()
    return scale * features @ text_features.t() + alpha * torch.exp(-(beta - beta * affinity)) @ values


def search_grid(scale: float, steps: int) -> List[float]:
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


@torch.no_grad()
def search_beta_alpha(features, labels, keys, values, text_features, scale, search_scale,
                      search_step) -> Tuple[float, float]:
    """The (beta, alpha) of the grids classifying most of ``features`` correctly, the first in
    beta-major order; (0, 0) when none classifies any correctly (as published)."""
    alphas = search_grid(search_scale[1], search_step[1])
    alpha_column = torch.tensor(alphas, dtype=features.dtype, device=features.device).view(-1, 1, 1)
    affinity = features @ keys.t()
    zero_shot = scale * features @ text_features.t()
    best, choice = 0, (0.0, 0.0)
    for beta in search_grid(search_scale[0], search_step[0]):
        cache = torch.exp(-(beta - beta * affinity)) @ values
        correct = ((zero_shot + alpha_column * cache).argmax(dim=-1) == labels).sum(dim=-1)
        index = int(correct.argmax())  # the first maximum
        if int(correct[index]) > best:
            best, choice = int(correct[index]), (beta, alphas[index])
    return choice


class TipCache(nn.Module):
    """The cache model: keys (trainable in Tip-Adapter-F), one-hot values, and the chosen beta/alpha."""

    def __init__(self, n_keys: int, dim: int, num_classes: int, trainable: bool):
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(n_keys, dim), requires_grad=trainable)
        self.register_buffer("values", torch.zeros(n_keys, num_classes))
        self.register_buffer("beta", torch.tensor(0.0))
        self.register_buffer("alpha", torch.tensor(0.0))


class TIPAdapterTrainingFree(FeatureTrainer):
    """Tip-Adapter without fine-tuning on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "TIPAdapterTrainingFree"
    CONFIG_NODE = "TIPADAPTER"
    HEAD_NAME = "tip_adapter"
    TRAINABLE_KEYS = False

    def build_head(self):
        return TipCache(len(self.dm.dataset.train_x), self.backbone.embed_dim, self.num_classes, self.TRAINABLE_KEYS)

    def scale(self):
        return torch.tensor(self.opts.LOGIT_SCALE, device=self.device) if self.opts.LOGIT_SCALE > 0 else super().scale()

    def logits_with(self, features, keys, beta, alpha):
        return tip_logits(features, keys, self.head.values, self.text_weights(), self.scale(), beta, alpha)

    def logits_from_features(self, image_features):
        return self.logits_with(image_features, self.head.keys, self.head.beta, self.head.alpha)

    def build_cache(self) -> torch.Tensor:
        """Set the values and return the keys (the normalised mean of the first AUGMENT_EPOCH views)."""
        views = torch.stack([self.train_view(v) for v in range(self.opts.AUGMENT_EPOCH)])
        self.head.values.copy_(F.one_hot(self.train_labels(), self.num_classes).float())
        return F.normalize(views.mean(dim=0), dim=-1)

    def search(self, keys: torch.Tensor) -> None:
        """Deploy ``keys`` with the beta and alpha searched on the validation set."""
        features, labels = self.split_features("val")
        beta, alpha = search_beta_alpha(features, labels, keys, self.head.values, self.text_weights(), self.scale(),
                                        self.opts.SEARCH_SCALE, self.opts.SEARCH_STEP)
        n_val = len(labels)
        with torch.no_grad():
            self.head.keys.copy_(keys)
            self.head.beta.fill_(beta)
            self.head.alpha.fill_(alpha)
        correct = self.val_correct(self.logits_from_features)
        print(f"Searched on val: beta {beta:.2f}, alpha {alpha:.2f} (val accuracy {100.0 * correct / n_val:.1f}%)")

    def fit(self):
        self.search(self.build_cache())


class KeysAdapter(nn.Module):
    """Fine-tuned cache keys: the published adapter, a bias-free linear layer whose weight starts as K."""

    def __init__(self, keys: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(keys.detach().clone())


class TIPAdapter(TIPAdapterTrainingFree):
    """Tip-Adapter-F on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "TIPAdapter"
    TRAINABLE_KEYS = True

    def train_adapter(self, adapter: KeysAdapter, alpha: float, stage: str, best: Optional[BestOnVal] = None) -> None:
        """Fine-tune ``adapter`` for OPTIM.MAX_EPOCH epochs with INIT_BETA and ``alpha``; with ``best``,
        offer it after every epoch."""
        cfg, opts = self.cfg, self.opts
        labels = self.train_labels()
        batch_size = cfg.DATALOADER.TRAIN_X.BATCH_SIZE
        optim = torch.optim.AdamW(adapter.parameters(), lr=cfg.OPTIM.LR, eps=opts.ADAM_EPS,
                                  weight_decay=cfg.OPTIM.WEIGHT_DECAY,
                                  betas=(cfg.OPTIM.ADAM_BETA1, cfg.OPTIM.ADAM_BETA2))
        epochs = cfg.OPTIM.MAX_EPOCH
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, epochs * math.ceil(len(labels) / batch_size))

        def logits(features):
            return self.logits_with(features, adapter.weight, opts.INIT_BETA, alpha)

        for epoch in range(epochs):
            features = self.train_view(opts.AUGMENT_EPOCH + epoch)
            losses, lrs = [], []
            for index in self.minibatches(len(labels), batch_size):
                loss = F.cross_entropy(logits(features[index]), labels[index])
                optim.zero_grad()
                loss.backward()
                lrs.append(optim.param_groups[0]["lr"])
                optim.step()
                sched.step()
                losses.append(loss.item())
            correct = self.val_correct(logits)
            if best is not None:
                best.offer(correct, adapter)
            self.log_epoch(stage, epoch, epochs, losses, lrs, correct)

    def choose_initial_alpha(self, keys: torch.Tensor) -> Tuple[float, KeysAdapter]:
        """The grid search: (alpha0, its fine-tuned adapter) of the best val accuracy, a later alpha0
        winning only when strictly better (INIT_ALPHA and the untrained keys when none scores)."""
        opts = self.opts
        shared = KeysAdapter(keys) if opts.PUBLISHED_GRID_SEARCH else None
        best_correct, choice = 0, (opts.INIT_ALPHA, shared or KeysAdapter(keys))
        for alpha in map(float, range(opts.INIT_ALPHA_SCALE)):
            adapter = shared or KeysAdapter(keys)
            self.train_adapter(adapter, alpha, stage=f"grid alpha0={alpha:g}")
            correct = self.val_correct(lambda f: self.logits_with(f, adapter.weight, opts.INIT_BETA, alpha))
            if correct > best_correct:
                best_correct, choice = correct, (alpha, adapter)
        print(f"Initial alpha chosen on val: {choice[0]:g} ({best_correct} correct)")
        return choice

    def fit(self):
        opts = self.opts
        keys = self.build_cache()
        if opts.GRID_SEARCH:
            alpha, adapter = self.choose_initial_alpha(keys)
        else:
            alpha, adapter = opts.INIT_ALPHA, KeysAdapter(keys)
        if not (opts.GRID_SEARCH and opts.PUBLISHED_GRID_SEARCH):
            best = BestOnVal()
            self.train_adapter(adapter, alpha, stage="fine-tune", best=best)
            best.restore(adapter)
            print(f"Deploying the fine-tuned adapter of the best val epoch ({best.score} correct)")
        self.search(adapter.weight.detach())


register_method(TIPAdapterTrainingFree, {})
register_method(TIPAdapter, published_names("TIPAdapter_{}"))
