"""Evaluators (dassl.md §7) and ``compute_accuracy``.

Difference from Dassl: with TEST.COMPUTE_CMAT the confusion matrix is saved to ``cmat.pt`` as a
float64 *tensor* (Dassl saves a pickled numpy array), so it loads with ``weights_only=True``.
"""
import os.path as osp
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from clip_biomed.engine.registry import Registry, build_registered

__all__ = ["EVALUATOR_REGISTRY", "EvaluatorBase", "Classification", "build_evaluator", "compute_accuracy"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")


def build_evaluator(cfg, **kwargs):
    return build_registered(EVALUATOR_REGISTRY, cfg.TEST.EVALUATOR, "evaluator", cfg.VERBOSE, cfg, **kwargs)


class EvaluatorBase:
    """Accumulates model outputs with ``process`` and summarises them with ``evaluate``."""

    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self):
        raise NotImplementedError

    def process(self, mo, gt):
        raise NotImplementedError

    def evaluate(self):
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accuracy, error rate and macro-F1 (+ per-class accuracy, confusion matrix if configured)."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class_res = None
        if cfg.TEST.PER_CLASS_RESULT:
            assert lab2cname is not None, "TEST.PER_CLASS_RESULT needs lab2cname (the class names)"
        self.reset()

    def reset(self):
        self._correct = 0
        self._total = 0
        self._y_true = []
        self._y_pred = []
        if self.cfg.TEST.PER_CLASS_RESULT:
            self._per_class_res = defaultdict(list)

    def process(self, mo, gt):
        """``mo``: logits [batch, num_classes]; ``gt``: labels [batch]."""
        pred = mo.max(1)[1]
        matches = pred.eq(gt).float()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.data.cpu().numpy().tolist())
        self._y_pred.extend(pred.data.cpu().numpy().tolist())
        if self._per_class_res is not None:
            for i, label in enumerate(gt):
                self._per_class_res[label.item()].append(int(matches[i].item()))

    def evaluate(self):
        results = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        from sklearn.metrics import f1_score  # imported here: sklearn adds ~1 s to every train.py start

        macro_f1 = 100.0 * f1_score(self._y_true, self._y_pred, average="macro", labels=np.unique(self._y_true))
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )

        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                hits = self._per_class_res[label]
                correct, total = sum(hits), len(hits)
                class_acc = 100.0 * correct / total
                accs.append(class_acc)
                print(f"* class: {label} ({self._lab2cname[label]})\t"
                      f"total: {total:,}\tcorrect: {correct:,}\tacc: {class_acc:.1f}%")
            mean_acc = np.mean(accs)
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc

        if self.cfg.TEST.COMPUTE_CMAT:
            from sklearn.metrics import confusion_matrix

            cmat = confusion_matrix(self._y_true, self._y_pred, normalize="true")
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(torch.from_numpy(cmat), save_path)
            print(f"Confusion matrix is saved to {save_path}")
        return results


def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies (%) of ``output`` logits [batch, classes]; one 1-element tensor per k."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size) for k in topk]
