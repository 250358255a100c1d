"""Clinical metrics (clip_biomed.metrics) against hand-computed values, the ClinicalClassification
evaluator's printed block and JSON, parse_test_res on its lines, and a real BiomedCoOp run's log."""
import json

import numpy as np
import pytest
import torch

import parse_test_res
import train
from clip_biomed import metrics
from clip_biomed.dassl import Classification, build_evaluator, get_cfg_default
from clip_biomed.evaluation import ClinicalClassification, metrics_file_name, report_lines

# Three classes, class 2 absent from the labels. Probabilities chosen off the 1/15 bin edges.
PROBS = np.array([
    [0.70, 0.20, 0.10],  # label 0, predicted 0, confidence .70
    [0.45, 0.50, 0.05],  # label 0, predicted 1, .50
    [0.30, 0.65, 0.05],  # label 1, predicted 1, .65
    [0.50, 0.35, 0.15],  # label 1, predicted 0, .50
    [0.10, 0.25, 0.65],  # label 1, predicted 2, .65
    [0.20, 0.70, 0.10],  # label 1, predicted 1, .70
])
LABELS = np.array([0, 0, 1, 1, 1, 1])
LOGITS = np.log(PROBS)  # softmax(log p) = p
CLASSNAMES = ["glioma tumor", "normal brain", "pituitary tumor"]
# By hand: confusion rows [1 1 0], [1 2 1], [0 0 0].
SENSITIVITY = [1 / 2, 2 / 4, None]
SPECIFICITY = [3 / 4, 1 / 2, 5 / 6]  # negatives of class 2: all 6 samples, one predicted 2
# Class 0: positives {.70, .45} vs negatives {.30, .50, .10, .20}: 7 of 8 pairs ordered.
# Class 1: positives {.65, .35, .25, .70} vs negatives {.20, .50}: 6 of 8.
AUROC = [7 / 8, 6 / 8, None]
# Bins: .70 (2 right): |1 - .7| 2/6; .65 (1 of 2 right): |.5 - .65| 2/6; .50 (both wrong): .5 2/6.
ECE = (0.3 + 0.15 + 0.5) * 2 / 6


def test_multiclass_metrics_with_an_absent_class():
    cmat = metrics.confusion_matrix(LABELS, LOGITS.argmax(1), 3)
    assert cmat.tolist() == [[1, 1, 0], [1, 2, 1], [0, 0, 0]]
    sens, spec = metrics.sensitivity_specificity(cmat)
    assert sens[:2] == pytest.approx(SENSITIVITY[:2]) and sens[2] is None
    assert spec == pytest.approx(SPECIFICITY)
    assert metrics.balanced_accuracy(cmat) == pytest.approx(0.5)  # over the two classes present
    probs = metrics.softmax(LOGITS)
    assert probs == pytest.approx(PROBS)
    aurocs = metrics.class_aurocs(probs, LABELS)
    assert aurocs[:2] == pytest.approx(AUROC[:2]) and aurocs[2] is None
    assert metrics.macro_auroc(probs, LABELS) == pytest.approx((7 / 8 + 6 / 8) / 2)
    assert metrics.expected_calibration_error(probs, LABELS) == pytest.approx(ECE)

    from sklearn.metrics import balanced_accuracy_score, roc_auc_score  # the same definitions as sklearn's

    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert metrics.balanced_accuracy(cmat) == pytest.approx(balanced_accuracy_score(LABELS, LOGITS.argmax(1)))
    assert aurocs[0] == pytest.approx(roc_auc_score(LABELS == 0, PROBS[:, 0]))


def test_binary_auroc_is_the_positive_class_and_ece_by_hand():
    p1 = np.array([0.10, 0.45, 0.35, 0.85])  # labels 0 0 1 1: AUROC 3/4 (pairs .35>.10, .85>.10, .85>.45)
    logits = np.stack([np.zeros(4), np.log(p1 / (1 - p1))], axis=1)
    labels = np.array([0, 0, 1, 1])
    report = metrics.clinical_report(logits, labels, ["benign", "malignant"])
    assert report["positive_class"] == "malignant"
    assert report["metrics"]["macro_auroc"] == pytest.approx(75.0)
    # predictions 0 0 0 1: sensitivity benign 2/2, malignant 1/2
    assert report["metrics"]["balanced_accuracy"] == pytest.approx(75.0)
    assert [r["sensitivity"] for r in report["per_class"]] == pytest.approx([100.0, 50.0])
    assert [r["specificity"] for r in report["per_class"]] == pytest.approx([50.0, 100.0])
    # confidences .90 .55 (right), .65 (wrong), .85 (right), each alone in its bin
    assert report["metrics"]["ece"] == pytest.approx(100 * (0.10 + 0.45 + 0.65 + 0.15) / 4)
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]


def test_perfect_calibration_has_zero_ece():
    certain = np.array([[50.0, 0.0], [0.0, 50.0], [50.0, 0.0]])
    assert metrics.expected_calibration_error(metrics.softmax(certain), np.array([0, 1, 0])) == 0.0
    # 4 predictions at confidence .75, 3 right; 10 at .90, 9 right
    logits = np.array([[np.log(3.0), 0.0]] * 4 + [[np.log(9.0), 0.0]] * 10)
    labels = np.array([0, 0, 0, 1] + [0] * 9 + [1])
    probs = metrics.softmax(logits)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    bins = metrics.calibration_bins(probs, labels)
    assert len(bins) == metrics.ECE_BINS and [b["count"] for b in bins if b["count"]] == [4, 10]


def test_single_class_labels_are_reported_not_nan():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    report = metrics.clinical_report(logits, np.array([0, 0, 0]))
    assert report["metrics"]["macro_auroc"] is None
    assert report["undefined"] == {"macro_auroc": "the labels hold a single class"}
    assert report["metrics"]["balanced_accuracy"] == pytest.approx(200 / 3)  # the sensitivity of class 0
    first, second, _ = report["per_class"]
    assert first["specificity"] is None and first["undefined"] == {"specificity": metrics.NO_OTHER_CLASS,
                                                                  "auroc": metrics.NO_OTHER_CLASS}
    assert second["sensitivity"] is None and second["specificity"] == pytest.approx(100 * 2 / 3)
    assert report["classes_absent"] == ["1", "2"]
    json.dumps(report, allow_nan=False)  # no NaN anywhere

    binary = metrics.clinical_report(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 1]))
    assert binary["undefined"] == {"macro_auroc": "two classes: needs samples of both"}


def test_non_finite_logits_leave_auroc_and_ece_undefined():
    logits = np.array([[np.nan, 0.0], [0.0, 1.0], [1.0, 0.0]])
    report = metrics.clinical_report(logits, np.array([0, 1, 0]))
    assert report["metrics"]["ece"] is None and report["undefined"]["ece"] == metrics.NON_FINITE
    assert report["metrics"]["balanced_accuracy"] == pytest.approx(100.0)  # argmax still counts
    json.dumps(report, allow_nan=False)
    masked = metrics.clinical_report(np.array([[-np.inf, 0.0], [0.0, 1.0]]), np.array([1, 1]))  # softmax defined
    assert masked["metrics"]["ece"] == pytest.approx(100 * (1 / (1 + np.e)) / 2)  # confidences 1 and e/(1+e), right


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        metrics.clinical_report(LOGITS, np.array([0, 0, 1, 1, 1, 3]))
    with pytest.raises(ValueError, match="expected logits"):
        metrics.clinical_report(LOGITS, LABELS[:5])
    with pytest.raises(ValueError, match="2 class names for 3 logit columns"):
        metrics.clinical_report(LOGITS, LABELS, ["a", "b"])


def test_class_keys_are_single_words_without_collisions():
    assert metrics.class_keys(["glioma tumor", "T-cell (CD4+)", "a/b", "a b", "+"]) == [
        "glioma_tumor", "T-cell_CD4", "a_b_2", "a_b_3", "4"]


# -- the evaluator ------------------------------------------------------------------------------

def evaluator_cfg(tmp_path, name="ClinicalClassification", **test):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.TEST.EVALUATOR = name
    for key, value in test.items():
        cfg.TEST[key] = value
    return cfg


def evaluate(evaluator, logits=LOGITS, labels=LABELS):
    logits, labels = torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)
    evaluator.process(logits[:4], labels[:4])
    evaluator.process(logits[4:], labels[4:])
    return evaluator.evaluate()


def test_block_keeps_dassls_lines_first_then_the_clinical_lines(tmp_path, capsys):
    lab2cname = dict(enumerate(CLASSNAMES))
    dassl_results = evaluate(Classification(evaluator_cfg(tmp_path, "Classification"), lab2cname=lab2cname))
    dassl_block = capsys.readouterr().out
    evaluator = build_evaluator(evaluator_cfg(tmp_path), lab2cname=lab2cname)
    assert isinstance(evaluator, ClinicalClassification)
    evaluator.split = "test"
    results = evaluate(evaluator)
    out = capsys.readouterr().out
    assert out.startswith("Loading evaluator: ClinicalClassification\n" + dassl_block)
    path = tmp_path / "metrics_test.json"
    assert out[len("Loading evaluator: ClinicalClassification\n" + dassl_block):] == (
        "* balanced_accuracy: 50.0%\n"
        "* macro_auroc: 81.2%\n"
        f"* ece: {100 * ECE:.1f}%\n"
        "* sensitivity.glioma_tumor: 50.0%\n"
        "* specificity.glioma_tumor: 75.0%\n"
        "* sensitivity.normal_brain: 50.0%\n"
        "* specificity.normal_brain: 50.0%\n"
        "* sensitivity.pituitary_tumor: n/a (no sample of this class)\n"
        "* specificity.pituitary_tumor: 83.3%\n"
        "Note: no sample of pituitary tumor: balanced_accuracy, macro_f1 and macro_auroc average the 2 class(es) "
        "present\n"
        f"Metrics are saved to {path}\n"
    )
    assert list(results) == ["accuracy", "error_rate", "macro_f1", "balanced_accuracy", "macro_auroc", "ece"]
    assert {k: results[k] for k in dassl_results} == dassl_results  # the first value is still accuracy

    saved = json.loads(path.read_text())
    assert saved["split"] == "test" and saved["num_samples"] == 6 and saved["classes"] == CLASSNAMES
    assert saved["metrics"] == pytest.approx({**dassl_results, "balanced_accuracy": 50.0, "macro_auroc": 81.25,
                                              "ece": 100 * ECE})
    assert saved["confusion_matrix"] == [[1, 1, 0], [1, 2, 1], [0, 0, 0]]
    absent = saved["per_class"][2]
    assert absent["support"] == 0 and absent["predicted"] == 1 and absent["sensitivity"] is None
    assert absent["undefined"] == {"sensitivity": "no sample of this class", "auroc": "no sample of this class"}
    assert sum(b["count"] for b in saved["calibration"]["bins"]) == 6


def test_split_names_the_file_and_batches_reset(tmp_path, capsys):
    evaluator = ClinicalClassification(evaluator_cfg(tmp_path, PER_CLASS_RESULT=True),
                                       lab2cname=dict(enumerate(CLASSNAMES)))
    evaluator.split = "val"
    evaluate(evaluator)
    evaluator.reset()
    evaluator.split = None  # a trainer that does not say which split (Dassl's own test())
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.bfloat16)
    evaluator.process(logits, torch.tensor([0, 1]))
    results = evaluator.evaluate()
    out = capsys.readouterr().out
    assert "=> per-class result\n" in out and out.index("* average:") < out.index("* balanced_accuracy:")
    assert json.loads((tmp_path / "metrics_val.json").read_text())["num_samples"] == 6
    assert json.loads((tmp_path / metrics_file_name(None)).read_text())["num_samples"] == 2  # reset forgot the rest
    assert results["balanced_accuracy"] == 100.0


def test_binary_block_names_the_positive_class():
    report = metrics.clinical_report(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), ["normal", "tumor"])
    note = "Note: two classes: macro_auroc is the AUROC of the positive class tumor (label 1)"
    assert report_lines(report)[-1] == note
    assert "* macro_auroc: 100.0%" in report_lines(report)


def test_parse_test_res_averages_any_metric_line(tmp_path):
    report = metrics.clinical_report(LOGITS, LABELS, CLASSNAMES)
    for seed, shift in (("seed1", 0.0), ("seed2", 10.0)):
        report["metrics"]["balanced_accuracy"] = 50.0 + shift
        (tmp_path / seed).mkdir()
        (tmp_path / seed / "log.txt").write_text("Finish training\n=> result\n* accuracy: 50.0%\n"
                                                 + "\n".join(report_lines(report)) + "\n")
    result = parse_test_res.parse_directory(str(tmp_path), keyword="balanced_accuracy", verbose=False)
    assert result["values"] == [50.0, 60.0]
    assert parse_test_res.parse_directory(str(tmp_path), keyword="specificity.pituitary_tumor",
                                          verbose=False)["mean"] == 83.3
    with pytest.raises(parse_test_res.NoResultsError):  # "n/a" lines are not numbers
        parse_test_res.parse_directory(str(tmp_path), keyword="sensitivity.pituitary_tumor", verbose=False)


# -- the default evaluator of train.py and a real run -----------------------------------------------

def test_train_py_defaults_to_the_clinical_evaluator_and_keeps_an_explicit_one():
    parse = train.build_parser().parse_args
    assert train.setup_cfg(parse([])).TEST.EVALUATOR == "ClinicalClassification"
    assert train.setup_cfg(parse(["TEST.EVALUATOR", "Classification"])).TEST.EVALUATOR == "Classification"


def test_biomedcoop_run_logs_the_metrics_and_parse_test_res_reads_them(synthetic_root, tiny_biomedclip, tmp_path,
                                                                       capsys):
    from tests.test_biomedcoop_trainer import make_trainer

    out = tmp_path / "BiomedCoOp" / "seed1"
    trainer = make_trainer(synthetic_root, tiny_biomedclip, out, "OPTIM.MAX_EPOCH", "1", "TEST.FINAL_MODEL", "best_val")
    tags = []
    trainer.write_scalar = lambda tag, value, step=None: tags.append(tag)
    trainer.train()
    log = capsys.readouterr().out
    assert "Loading evaluator: ClinicalClassification\n" in log
    final = log.split("Finish training\n")[1]
    assert final.count("* balanced_accuracy: ") == 1 and "* ece: " in final and "* sensitivity.normal_brain: " in final
    assert {"val/balanced_accuracy", "test/balanced_accuracy", "test/ece"} <= set(tags)
    saved = {split: json.loads((out / f"metrics_{split}.json").read_text()) for split in ("val", "test")}
    assert saved["test"]["num_samples"] == int(final.split("* total: ")[1].split("\n")[0])
    assert saved["val"]["split"] == "val" and len(saved["test"]["per_class"]) == 4

    (out / "log.txt").write_text(log)
    parsed = parse_test_res.parse_directory(str(out.parent), keyword="balanced_accuracy", verbose=False)
    assert parsed["values"] == [round(saved["test"]["metrics"]["balanced_accuracy"], 1)]
