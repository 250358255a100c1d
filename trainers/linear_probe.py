"""Linear probe: multinomial logistic regression on frozen features, with the published C search.

As the BiomedCoOp repository runs it (reference/biomedcoop.md §2.1): scikit-learn's
LogisticRegression (lbfgs, L2, ``MAX_ITER`` 1000) on the normalised features of one augmented view
of the few-shot images (view 0, feature_trainer.py).  C is searched on the validation set: the grid
``C_GRID`` (1e6 ... 1e-6) gives the best C* (the first on ties), then ``NUM_STEP`` (8) bisection steps
in log space between 0.1 C* and 10 C*: each step fits both ends, keeps the better one (the left on
ties) and halves the interval towards it.  The classifier of the last step is the one tested, as
published; unlike the published code, no step looks at the test set.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.feature_trainer import FeatureTrainer
from clip_biomed.method import published_names, register_method


def add_config(cfg) -> None:
    """TRAINER.LINEARPROBE keys (published LP/few_shot.yaml and trainer, reference §3.4)."""
    cfg.TRAINER.LINEARPROBE = CN()
    cfg.TRAINER.LINEARPROBE.PREC = "fp32"
    cfg.TRAINER.LINEARPROBE.C_GRID = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    cfg.TRAINER.LINEARPROBE.NUM_STEP = 8
    cfg.TRAINER.LINEARPROBE.MAX_ITER = 1000


def search_c(fit, score, grid, num_step):
    """The classifier the published search ends with: ``fit(C)`` -> classifier, ``score(clf)`` -> val
    correct count.  Returns (classifier, C)."""
    scores = [score(fit(c)) for c in grid]
    peak = grid[int(np.argmax(scores))]
    left, right = 0.1 * peak, 10.0 * peak
    chosen = None
    for _ in range(num_step):
        fit_left, fit_right = fit(left), fit(right)
        middle = 0.5 * (np.log10(right) + np.log10(left))
        if score(fit_left) < score(fit_right):
            chosen = (fit_right, right)
            left, right = np.power(10, middle), np.power(10, np.log10(right))
        else:
            chosen = (fit_left, left)
            left, right = np.power(10, np.log10(left)), np.power(10, middle)
    return chosen if chosen is not None else (fit(peak), peak)


class LinearProbe(FeatureTrainer):
    """Linear probe on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "LinearProbe"
    CONFIG_NODE = "LINEARPROBE"
    HEAD_NAME = "probe"

    def build_head(self):
        if self.num_classes < 2:
            raise ValueError(f"{self.METHOD} needs at least 2 classes; the training set has {self.num_classes}")
        return nn.Linear(self.backbone.embed_dim, self.num_classes)

    def logits_from_features(self, image_features):
        return self.head(image_features)

    def fit(self):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        opts = self.opts
        features = self.train_view(0).cpu().numpy()
        labels = self.train_labels().cpu().numpy()
        val_features, val_labels = (t.cpu().numpy() for t in self.split_features("val"))
        unconverged = set()

        def fit(c):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                classifier = LogisticRegression(solver="lbfgs", max_iter=opts.MAX_ITER, C=c).fit(features, labels)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                unconverged.add(float(c))
            return classifier

        def score(classifier):
            return int((classifier.predict(val_features) == val_labels).sum())

        classifier, c = search_c(fit, score, [float(c) for c in opts.C_GRID], opts.NUM_STEP)
        if unconverged:
            print(f"Note: lbfgs stopped at MAX_ITER {opts.MAX_ITER} before converging for C in "
                  f"{', '.join(f'{v:.3g}' for v in sorted(unconverged))}")
        if list(classifier.classes_) != list(range(self.num_classes)):
            raise ValueError(f"{self.METHOD}: the training images cover the classes {list(classifier.classes_)} only, "
                             f"not all {self.num_classes}; every class needs training images")
        weight, bias = torch.from_numpy(classifier.coef_).float(), torch.from_numpy(classifier.intercept_).float()
        if weight.shape[0] == 1:  # binary: scikit-learn keeps one row, the logit of class 1
            weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros_like(bias), bias])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(bias)
        print(f"C chosen on val: {c:.4g} (val accuracy {100.0 * score(classifier) / len(val_labels):.1f}%)")


register_method(LinearProbe, published_names("LinearProbe_{}"))
