"""python -m clip_biomed.results on output trees with known numbers: per-dataset and averaged tables,
incomplete cells marked, both base-to-novel HM conventions, the published layout, any metric, the plot."""
import csv
import json
import io

import pytest

from clip_biomed import results

TAIL = "BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend"


def write_log(folder, accuracy, eval_only=False, macro_f1=None):
    folder.mkdir(parents=True, exist_ok=True)
    block = f"=> result\n* total: 10\n* accuracy: {accuracy}%\n* macro_f1: {macro_f1 or accuracy - 10}%\n"
    (folder / "log.txt").write_text(
        f"** Arguments **\neval_only: {eval_only}\n** Config **\n"
        + (block if eval_only else f"epoch [1/1]\nFinish training\nDeploy the last-epoch model\n{block}"))


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """btmri and busi, K = 1 and 4, seeds 1-3 (busi K=4 misses seed 3); a zero-shot and a
    feature-method layout; base-to-novel with base/novel chosen so the two HM conventions differ."""
    out = tmp_path_factory.mktemp("output")
    for dataset, offset in (("btmri", 0), ("busi", 10)):
        for shots in (1, 4):
            for seed in (1, 2, 3):
                if (dataset, shots, seed) != ("busi", 4, 3):
                    write_log(out / dataset / f"shots_{shots}" / TAIL / f"seed{seed}", 50 + offset + shots + seed)
                    write_log(out / dataset / f"shots_{shots}" / "LinearProbe_P2_BiomedCLIP" / f"seed{seed}", 40 + seed)
        write_log(out / dataset / "ZeroshotBiomedCLIP" / "vit_b16", 30 + offset, eval_only=True)
    for dataset, (base, novel) in (("btmri", (80, 60)), ("kvasir", (90, 30))):
        for seed in (1, 2, 3):
            b2n = f"{dataset}/shots_16/{TAIL}/seed{seed}"
            write_log(out / "base2new/train_base" / b2n, base + seed - 2)
            write_log(out / "base2new/test_new" / b2n, novel + seed - 2, eval_only=True)
    write_log(out / "btmri/shots_8" / TAIL / "seed1", 99)
    (out / "btmri/shots_8" / TAIL / "seed1/log.txt").write_text("epoch [3/100]\n")  # still running
    return out


def test_runs_are_read_from_the_published_layout(output):
    found = results.collect(str(output), methods=["BiomedCoOp"])
    zero_shot = [v for v in found.values if v.shots == 0]
    assert {(v.dataset, v.row, v.seed, v.value) for v in zero_shot} == {
        ("btmri", results.Row("Zeroshot", "BiomedCLIP", "vit_b16"), None, 30.0),
        ("busi", results.Row("Zeroshot", "BiomedCLIP", "vit_b16"), None, 40.0)}
    assert results.Row("LinearProbe_P2", "BiomedCLIP", "") in {v.row for v in found.values}
    assert found.unfinished == [str(output / "btmri/shots_8" / TAIL / "seed1")]
    assert results.split_trainer("CoOp_local_copy", ["CoOp"]) == ("CoOp", "local_copy")
    assert results.split_trainer("CoOp_tiny-biomedclip") == ("CoOp", "tiny-biomedclip")
    coop_layout = results.parse_run_path("caltech101/CoOp/vit_b16_16shots/nctx16_cscFalse_ctpend/seed2")
    assert (coop_layout["shots"], coop_layout["seed"], coop_layout["row"].method) == (16, 2, "CoOp")


def test_few_shot_tables_mark_missing_seeds_and_average_over_datasets(output):
    fs = results.few_shot_results(results.collect(str(output)).values, "accuracy")
    coop = results.Row("BiomedCoOp", "BiomedCLIP", "nctx4_cscFalse_ctpend")
    assert fs.cells[(coop, "btmri", 1)].text() == "53.00 ± 0.82"  # 52, 53, 54
    assert fs.cells[(coop, "busi", 4)].text() == "65.50 ± 0.50 (2/3 seeds)"  # 65, 66
    assert fs.average(coop, 1).text() == "58.00"  # (53 + 63) / 2
    assert fs.average(coop, 4).text() == "60.75 (1 with missing seeds)"  # (56 + 65.5) / 2
    markdown = results.few_shot_markdown(fs)
    assert "| btmri | Zeroshot | BiomedCLIP | 30.00 |" in markdown
    assert "mean ± std over 3 seeds (1, 2, 3)" in markdown
    cells, averages = results.few_shot_csv(fs)
    busi4 = next(r for r in csv.DictReader(io.StringIO(cells))
                 if (r["dataset"], r["method"], r["shots"]) == ("busi", "BiomedCoOp", "4"))
    assert (busi4["mean"], busi4["n_seeds"], busi4["expected_seeds"], busi4["seeds"], busi4["complete"]) == (
        "65.5000", "2", "3", "1 2", "False")
    avg = next(r for r in csv.DictReader(io.StringIO(averages)) if (r["method"], r["shots"]) == ("BiomedCoOp", "4"))
    assert (avg["mean_over_datasets"], avg["n_datasets"], avg["complete"]) == ("60.7500", "2", "False")


def test_an_average_missing_a_dataset_says_so(output, tmp_path):
    values = [v for v in results.collect(str(output)).values if not (v.dataset == "busi" and v.shots == 1)]
    fs = results.few_shot_results(values, "accuracy")
    coop = results.Row("BiomedCoOp", "BiomedCLIP", "nctx4_cscFalse_ctpend")
    assert fs.average(coop, 1).text() == "53.00 (1/2 datasets)"


def test_base_to_novel_reports_both_hm_conventions(output):
    b2n = results.base_to_novel_results(results.collect(str(output)).values, "accuracy")
    coop = results.Row("BiomedCoOp", "BiomedCLIP", "nctx4_cscFalse_ctpend")
    averages = b2n.averages(coop)
    assert averages["base"].value == pytest.approx(85.0) and averages["novel"].value == pytest.approx(45.0)
    assert averages["hm_of_averages"].value == pytest.approx(2 * 85 * 45 / 130)            # 58.85
    assert averages["mean_of_hms"].value == pytest.approx((2 * 80 * 60 / 140 + 2 * 90 * 30 / 120) / 2)  # 56.79
    markdown = results.base_to_novel_markdown(b2n)
    assert "| **Average, HM = HM of the averaged base and novel** | BiomedCoOp | BiomedCLIP | 85.00 | 45.00 | 58.85 |" \
        in markdown
    assert "| **Average, HM = mean of per-dataset HMs** | BiomedCoOp | BiomedCLIP | 85.00 | 45.00 | 56.79 |" in markdown
    assert "| kvasir | BiomedCoOp | BiomedCLIP | 90.00 ± 0.82 | 30.00 ± 0.82 | 45.00 |" in markdown


def test_base_accuracy_of_evaluated_checkpoints_comes_from_test_base(tmp_path):
    for seed in (1, 2):
        write_log(tmp_path / f"base2new/test_base/btmri/shots_16/{TAIL}/seed{seed}", 70, eval_only=True)
        write_log(tmp_path / f"base2new/test_new/btmri/shots_16/{TAIL}/seed{seed}", 50, eval_only=True)
    b2n = results.base_to_novel_results(results.collect(str(tmp_path)).values, "accuracy")
    (row,) = b2n.rows
    assert b2n.base[(row, "btmri")].text() == "70.00 ± 0.00" and b2n.per_dataset_hm(row, "btmri") == pytest.approx(
        2 * 70 * 50 / 120)


def test_cli_writes_tables_csv_and_the_plot_for_any_metric(output, tmp_path, capsys):
    assert results.main([str(output), "--out", str(tmp_path / "res"), "--metric", "macro_f1", "--paper"]) == 0
    printed = capsys.readouterr().out
    assert "### Few-shot macro_f1 (%)" in printed and "| BiomedCoOp (paper) | BiomedCLIP |" in printed
    assert "1 run folders without a final result" in printed
    png = tmp_path / "res" / "few_shot_macro_f1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for name in ("few_shot_macro_f1.md", "few_shot_macro_f1.csv", "base2new_macro_f1_average.csv"):
        assert (tmp_path / "res" / name).is_file()
    assert "43.00 ± 0.82" in (tmp_path / "res" / "few_shot_macro_f1.md").read_text()  # accuracy 53 - 10

    assert results.main([str(output), "--metric", "balanced_accuracy"]) == 1
    assert "'* balanced_accuracy: X%'" in capsys.readouterr().err


def test_method_and_backbone_come_from_the_runs_own_record(tmp_path):
    """Folders such as Zeroshot<backbone>2 (the ensemble's published naming) do not split; the run's
    run_info.json names the trainer and the backbone."""
    run = tmp_path / "btmri" / "Zeroshottiny-biomedclip2" / "vit_b16"
    write_log(run, 47.5, eval_only=True)
    (run / "run_info.json").write_text(json.dumps({"trainer": "ZeroshotEnsemble", "classnames": [], "config": {
        "MODEL": {"BACKBONE": {"NAME": "local-dir:/models/tiny-biomedclip/"}}}}))
    (value,) = results.collect(str(tmp_path)).values
    assert (value.row, value.shots, value.value) == (results.Row("ZeroshotEnsemble", "tiny-biomedclip", "vit_b16"),
                                                     0, 47.5)
