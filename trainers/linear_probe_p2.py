"""LP++ (Huang et al., CVPR 2024): a linear probe plus learned per-class weights of the text logits.

As the BiomedCoOp repository runs it (reference/biomedcoop.md §2.1), on the normalised features F
``[N, D]`` of one augmented view of the N few-shot images (view 0, feature_trainer.py), their labels
y, and the normalised features T ``[C, D]`` of "a photo of a {class}.":

    logits = F W^T + b + alpha * (F T^T)        (alpha ``[C]``, one weight per class; no logit scale)

* W starts at the class means of F (b: PyTorch's default init), alpha at the scalar
  ``ALPHA_INIT_FACTOR`` (250) x mean over classes k of the mean of f . t_k over the images of class k;
* full-batch gradient descent for ``OPTIM.MAX_EPOCH`` (300) epochs: (W, b) by SGD with momentum 0.9
  and step 4N / lambda_max(F^T F); every ``ALPHA_EVERY`` (10) epochs alpha takes one gradient step of
  size N / (4 max_k sum_n (f_n . t_k)^2);
* after every epoch the validation accuracy is measured; the state of the last epoch with the best
  accuracy (ties go to the later epoch, as published) is the one tested.

Fixes of the published code (§9 row 16), each with the key that restores the published behaviour:

* alpha's gradient is cleared every epoch, so its step uses the gradient at the current point; the
  published code never clears it, so each step uses the sum of all gradients so far:
  ``TRAINER.LINEARPROBE_P2.ACCUMULATE_ALPHA_GRAD True``;
* W starts at the class *means*; the published code uses the class sums (K times larger, summed in
  half precision): ``TRAINER.LINEARPROBE_P2.CLASS_SUMS True``;
* no debug print of the one-hot label matrix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.feature_trainer import BestOnVal, FeatureTrainer
from clip_biomed.method import published_names, register_method


def add_config(cfg) -> None:
    """TRAINER.LINEARPROBE_P2 keys (published LP2/few_shot.yaml and trainer, reference §3.4)."""
    cfg.TRAINER.LINEARPROBE_P2 = CN()
    cfg.TRAINER.LINEARPROBE_P2.PREC = "fp32"
    cfg.TRAINER.LINEARPROBE_P2.ALPHA_EVERY = 10
    cfg.TRAINER.LINEARPROBE_P2.ALPHA_INIT_FACTOR = 250.0
    cfg.TRAINER.LINEARPROBE_P2.ACCUMULATE_ALPHA_GRAD = False  # True: never clear alpha's gradient (published)
    cfg.TRAINER.LINEARPROBE_P2.CLASS_SUMS = False             # True: W starts at class sums (published)


def class_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int, sums: bool = False) -> torch.Tensor:
    """Per-class means ``[C, D]`` of ``features`` (``sums``: the published half-precision class sums)."""
    one_hot = F.one_hot(labels, num_classes).t()
    if sums:
        return (one_hot.half() @ features.half()).float()
    one_hot = one_hot.to(features.dtype)
    return one_hot @ features / one_hot.sum(dim=1, keepdim=True)


def weight_step_size(features: torch.Tensor) -> float:
    """4N / lambda_max(F^T F)."""
    gram = (features.t() @ features).double()
    return float(4 * features.shape[0] / torch.linalg.eigvalsh(gram).max())


def alpha_step_size(features: torch.Tensor, text_features: torch.Tensor) -> float:
    """N / (4 max_k sum_n (f_n . t_k)^2)."""
    return float(features.shape[0] / (4 * ((features @ text_features.t()) ** 2).sum(dim=0).max()))


def initial_alpha(features, labels, num_classes, text_features, factor: float) -> float:
    """factor x the mean over classes k of the mean of f . t_k over the images of class k."""
    own_class = class_centroids(features @ text_features.t(), labels, num_classes).diagonal()
    return float(factor * own_class.double().mean())


class LPPlusPlusHead(nn.Module):
    """W f + b + alpha * (f . T) (``text_features`` passed in: they come from the backbone)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.alpha = nn.Parameter(torch.zeros(num_classes))

    def forward(self, features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return self.linear(features) + self.alpha * (features @ text_features.t())


class LinearProbe_P2(FeatureTrainer):  # noqa: N801  (the published trainer and output folder name)
    """LP++ on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "LinearProbe_P2"
    CONFIG_NODE = "LINEARPROBE_P2"
    HEAD_NAME = "probe"

    def build_head(self):
        return LPPlusPlusHead(self.backbone.embed_dim, self.num_classes)

    def logits_from_features(self, image_features):
        return self.head(image_features, self.text_weights())

    def fit(self):
        opts, head = self.opts, self.head
        features, labels, text = self.train_view(0), self.train_labels(), self.text_weights()
        with torch.no_grad():
            head.linear.weight.copy_(class_centroids(features, labels, self.num_classes, sums=opts.CLASS_SUMS))
            head.alpha.fill_(initial_alpha(features, labels, self.num_classes, text, opts.ALPHA_INIT_FACTOR))
        lr_weights, lr_alpha = weight_step_size(features), alpha_step_size(features, text)
        print(f"LP++: initial alpha {head.alpha[0].item():.4f}, step sizes {lr_weights:.4g} (W, b) and "
              f"{lr_alpha:.4g} (alpha)")
        optim = torch.optim.SGD(head.linear.parameters(), lr=lr_weights, momentum=0.9)
        best = BestOnVal(ties_to_later=True)
        epochs = self.cfg.OPTIM.MAX_EPOCH
        for epoch in range(epochs):
            loss = F.cross_entropy(self.logits_from_features(features), labels)
            optim.zero_grad()
            if not opts.ACCUMULATE_ALPHA_GRAD:
                head.alpha.grad = None
            loss.backward()
            optim.step()
            if (epoch + 1) % opts.ALPHA_EVERY == 0:
                with torch.no_grad():
                    head.alpha -= lr_alpha * head.alpha.grad
            correct = self.val_correct(self.logits_from_features)
            best.offer(correct, head)
            if (epoch + 1) % opts.ALPHA_EVERY == 0 or epoch + 1 == epochs:
                self.log_epoch("LP++", epoch, epochs, [loss.item()], [lr_weights], correct)
        best.restore(head)
        print(f"Deploying LP++ of the last epoch with the best val accuracy ({best.score} correct)")


register_method(LinearProbe_P2, published_names("LinearProbe_P2_{}"))
