"""The project's evaluator ``ClinicalClassification``: Dassl's ``Classification`` plus clinical metrics.

It subclasses the seam's ``Classification`` (real Dassl's or the built-in engine's) and registers in
the active engine's EVALUATOR_REGISTRY; ``train.py`` makes it the default TEST.EVALUATOR
(``TEST.EVALUATOR Classification`` gives Dassl's block alone). After Dassl's lines, unchanged and
first, it prints balanced accuracy, macro AUROC, ECE and each class's sensitivity and specificity as
``* <name>: X%`` lines (so ``parse_test_res.py --keyword <name>`` reads any of them), adds the summary
metrics to the returned results (tensorboard ``<split>/<name>``), and writes the whole report with
the per-class table, the confusion matrix and the reliability bins to
``OUTPUT_DIR/metrics_<split>.json``. Names and file format: docs/metrics.md.
"""
import json
import os
import os.path as osp
from typing import Dict, List

import torch

from clip_biomed.dassl import EVALUATOR_REGISTRY, Classification
from clip_biomed.metrics import clinical_report

__all__ = ["ClinicalClassification", "SUMMARY_METRICS", "report_lines", "metrics_file_name"]

SUMMARY_METRICS = ("balanced_accuracy", "macro_auroc", "ece")


def _value(value, reason) -> str:
    return f"{value:.1f}%" if value is not None else f"n/a ({reason})"


def report_lines(report: Dict) -> List[str]:
    """The lines printed after Dassl's block: ``* <name>: X%`` (``n/a (<reason>)`` where undefined),
    then notes on the degenerate cases."""
    lines = [f"* {name}: {_value(report['metrics'][name], report['undefined'].get(name))}"
             for name in SUMMARY_METRICS]
    for row in report["per_class"]:
        for field in ("sensitivity", "specificity"):
            lines.append(f"* {field}.{row['key']}: {_value(row[field], row['undefined'].get(field))}")
    if report["positive_class"] is not None:
        lines.append(f"Note: two classes: macro_auroc is the AUROC of the positive class "
                     f"{report['positive_class']} (label 1)")
    absent = report["classes_absent"]
    if absent:
        present = report["num_classes"] - len(absent)
        lines.append(f"Note: no sample of {', '.join(absent)}: balanced_accuracy, macro_f1 and macro_auroc "
                     f"average the {present} class(es) present")
    return lines


def metrics_file_name(split) -> str:
    return f"metrics_{split}.json" if split else "metrics.json"


@EVALUATOR_REGISTRY.register()
class ClinicalClassification(Classification):
    """Dassl's Classification block, then the clinical metrics (module docstring)."""

    def __init__(self, cfg, lab2cname=None, **kwargs):
        super().__init__(cfg, lab2cname=lab2cname, **kwargs)
        # The split being evaluated, set by the trainer's test() (ClipTrainer, the built-in
        # SimpleTrainer); it names the JSON file. A trainer that does not set it writes metrics.json.
        self.split = None
        self.reset()  # Dassl's __init__ does not call reset()

    def reset(self):
        super().reset()
        self._logits, self._labels = [], []

    def process(self, mo, gt):
        super().process(mo, gt)
        self._logits.append(mo.detach().float().cpu())  # float(): numpy has no bfloat16
        self._labels.append(gt.detach().cpu())

    def _class_names(self, num_classes: int) -> List[str]:
        names = self._lab2cname or {}
        return [names.get(label, str(label)) for label in range(num_classes)]

    def evaluate(self):
        results = super().evaluate()
        logits = torch.cat(self._logits)
        report = clinical_report(logits, torch.cat(self._labels), self._class_names(logits.shape[1]))
        print("\n".join(report_lines(report)))
        for name in SUMMARY_METRICS:
            if report["metrics"][name] is not None:
                results[name] = report["metrics"][name]
        print(f"Metrics are saved to {self.save(report, results)}")
        return results

    def save(self, report: Dict, results: Dict) -> str:
        """Write ``{split, unit, metrics (Dassl's then ours), ...report}`` as JSON; return its path."""
        metrics = {name: float(value) for name, value in results.items()}
        metrics.update(report["metrics"])
        record = {"split": self.split, "unit": "percent (counts are counts)", **report, "metrics": metrics}
        path = osp.join(self.cfg.OUTPUT_DIR, metrics_file_name(self.split))
        os.makedirs(osp.dirname(path) or ".", exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f, indent=1, allow_nan=False)
        os.replace(path + ".tmp", path)  # a reader never sees a half-written file
        return path
