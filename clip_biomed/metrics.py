"""Clinical metrics of a classifier from its logits and the true labels: pure functions on arrays.

Balanced accuracy, one-vs-rest AUROC, expected calibration error and per-class sensitivity and
specificity (docs/metrics.md). Every rate is a fraction in [0, 1]; :func:`clinical_report`
gathers them in percent, as the evaluator prints and saves them. A value that the evaluated labels
cannot define (the sensitivity of a class without samples, an AUROC without negatives) is ``None``
with its reason beside it, never NaN.

Conventions:
- predictions are the argmax of the logits (the first maximum on ties, as ``torch.max``);
- probabilities are the softmax of the logits (computed in float64);
- macro averages (balanced accuracy, macro AUROC) run over the classes present in the labels, as
  Dassl's macro-F1 does;
- two-class problems: the positive class is label 1 (``POSITIVE_LABEL``), and ``macro_auroc`` is
  its AUROC (with softmax scores the AUROCs of both classes are the same number);
- ECE: ``ECE_BINS`` equal-width bins of confidence (the top probability), bin k holding
  ``k/B < confidence <= (k+1)/B``; ECE = sum over bins of (bin size / N) * |accuracy - mean confidence|.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "ECE_BINS", "POSITIVE_LABEL", "as_arrays", "softmax", "confusion_matrix", "sensitivity_specificity",
    "balanced_accuracy", "class_aurocs", "macro_auroc", "calibration_bins", "expected_calibration_error",
    "class_keys", "clinical_report",
]

ECE_BINS = 15
POSITIVE_LABEL = 1

NO_SAMPLE = "no sample of this class"
NO_OTHER_CLASS = "no sample of another class"
NON_FINITE = "the softmax of the logits is not finite (NaN or infinite logits)"


def as_arrays(logits, labels) -> Tuple[np.ndarray, np.ndarray]:
    """``logits`` [N, C] as float64 and ``labels`` [N] as int64 (numpy arrays or torch tensors), checked."""
    if hasattr(logits, "detach"):  # a torch tensor; double() first, numpy has no bfloat16
        logits = logits.detach().double().cpu()
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu()
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"expected logits [N, C] and labels [N], got shapes {logits.shape} and {labels.shape}")
    if logits.shape[0] == 0:
        raise ValueError("no samples to evaluate (empty logits)")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be integers in [0, {logits.shape[1]}) (one per logit column), got "
                         f"{labels.dtype} values from {labels.min()} to {labels.max()}")
    return logits, labels.astype(np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``[C, C]``: row = true label, column = predicted label."""
    return np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes,
                                                                                               num_classes)


def _ratio(numerator, denominator) -> Optional[float]:
    return float(numerator / denominator) if denominator else None


def sensitivity_specificity(cmat: np.ndarray) -> Tuple[List[Optional[float]], List[Optional[float]]]:
    """Per class: sensitivity TP/(TP+FN) (None without samples of the class) and specificity
    TN/(TN+FP) (None without samples of other classes), one-vs-rest."""
    total = cmat.sum()
    true_pos = np.diag(cmat)
    positives, predicted = cmat.sum(axis=1), cmat.sum(axis=0)
    negatives = total - positives
    true_neg = total - positives - predicted + true_pos
    return ([_ratio(tp, p) for tp, p in zip(true_pos, positives)],
            [_ratio(tn, n) for tn, n in zip(true_neg, negatives)])


def balanced_accuracy(cmat: np.ndarray) -> float:
    """Mean sensitivity over the classes present."""
    sensitivity, _ = sensitivity_specificity(cmat)
    return float(np.mean([s for s in sensitivity if s is not None]))


def class_aurocs(probs: np.ndarray, labels: np.ndarray) -> List[Optional[float]]:
    """One-vs-rest AUROC of each class (score: its probability); None without positives or negatives."""
    from sklearn.metrics import roc_auc_score  # imported here: sklearn adds ~1 s to every train.py start

    aurocs = []
    for c in range(probs.shape[1]):
        positive = labels == c
        aurocs.append(float(roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(labels) else None)
    return aurocs


def _macro_auroc(aurocs: Sequence[Optional[float]]) -> Optional[float]:
    if len(aurocs) == 2:
        return aurocs[POSITIVE_LABEL]
    defined = [a for a in aurocs if a is not None]
    return float(np.mean(defined)) if defined else None


def macro_auroc(probs: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Mean one-vs-rest AUROC over the classes present; with two classes, the AUROC of label 1. None
    when the labels hold a single class."""
    return _macro_auroc(class_aurocs(probs, labels))


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> List[Dict]:
    """The reliability diagram: per confidence bin, its bounds, size, mean confidence and accuracy
    (None for an empty bin)."""
    predictions = probs.argmax(axis=1)
    confidence = probs[np.arange(len(labels)), predictions]
    correct = predictions == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")  # bin k: edges[k] < conf <= edges[k + 1]
    bins = []
    for k in range(n_bins):
        members = index == k
        count = int(members.sum())
        bins.append({"lower": float(edges[k]), "upper": float(edges[k + 1]), "count": count,
                     "confidence": float(confidence[members].mean()) if count else None,
                     "accuracy": float(correct[members].mean()) if count else None})
    return bins


def _ece(bins: Sequence[Dict]) -> float:
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    return _ece(calibration_bins(probs, labels, n_bins))


def class_keys(classnames: Sequence[str]) -> List[str]:
    """Names of the per-class metric lines (``sensitivity.<key>``): the class name with every run of
    characters other than letters, digits, ``_`` and ``-`` replaced by ``_``; names that would collide
    get their label appended."""
    slugs = [re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or str(label) for label, name in enumerate(classnames)]
    return [f"{slug}_{label}" if slugs.count(slug) > 1 else slug for label, slug in enumerate(slugs)]


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100.0 * value


def clinical_report(logits, labels, classnames: Optional[Sequence[str]] = None) -> Dict:
    """Every clinical metric of one evaluation, rates in percent, JSON-ready (docs/metrics.md).

    ``undefined`` (top level and per class) maps each ``None`` value to its reason.
    """
    logits, labels = as_arrays(logits, labels)
    num_classes = logits.shape[1]
    classnames = list(classnames) if classnames is not None else [str(c) for c in range(num_classes)]
    if len(classnames) != num_classes:
        raise ValueError(f"{len(classnames)} class names for {num_classes} logit columns")
    cmat = confusion_matrix(labels, logits.argmax(axis=1), num_classes)
    sensitivity, specificity = sensitivity_specificity(cmat)
    with np.errstate(invalid="ignore"):  # NaN logits, or a row whose maximum is +inf or -inf
        probs = softmax(logits)
    finite = bool(np.isfinite(probs).all())
    aurocs = class_aurocs(probs, labels) if finite else [None] * num_classes
    bins = calibration_bins(probs, labels) if finite else None
    metrics = {"balanced_accuracy": _percent(balanced_accuracy(cmat)),
               "macro_auroc": _percent(_macro_auroc(aurocs)), "ece": _percent(_ece(bins)) if finite else None}
    undefined = {}
    if not finite:
        undefined = {"macro_auroc": NON_FINITE, "ece": NON_FINITE}
    elif metrics["macro_auroc"] is None:
        undefined["macro_auroc"] = ("two classes: needs samples of both" if num_classes == 2 else
                                    "the labels hold a single class")

    per_class = []
    for c, (name, key) in enumerate(zip(classnames, class_keys(classnames))):
        row = {"label": c, "name": name, "key": key, "support": int(cmat[c].sum()),
               "predicted": int(cmat[:, c].sum()), "sensitivity": _percent(sensitivity[c]),
               "specificity": _percent(specificity[c]), "auroc": _percent(aurocs[c])}
        reasons = {"sensitivity": NO_SAMPLE, "specificity": NO_OTHER_CLASS,
                   "auroc": NON_FINITE if not finite else NO_SAMPLE if sensitivity[c] is None else NO_OTHER_CLASS}
        row["undefined"] = {field: reason for field, reason in reasons.items() if row[field] is None}
        per_class.append(row)

    return {
        "num_samples": int(len(labels)),
        "num_classes": num_classes,
        "classes": classnames,
        "positive_class": classnames[POSITIVE_LABEL] if num_classes == 2 else None,
        "classes_absent": [name for name, row in zip(classnames, per_class) if row["support"] == 0],
        "metrics": metrics,
        "undefined": undefined,
        "per_class": per_class,
        "confusion_matrix": cmat.tolist(),
        "calibration": {"num_bins": ECE_BINS, "bins": [
            {k: _percent(v) if k != "count" else v for k, v in b.items()} for b in bins] if finite else None},
    }
