"""parse_test_res.py: CoOp's output format (dassl.md §10) and its fixed defects (biomedcoop.md §5.3)."""
import numpy as np
import pytest

import parse_test_res


def training_log(accuracy, end="Finish training", val=12.5):
    return (
        "epoch [1/1] batch [1/1] loss 1.0 (1.0)\nEvaluate on the *val* set\n=> result\n"
        f"* accuracy: {val}%\n{end}\nDeploy the last-epoch model\nEvaluate on the *test* set\n=> result\n"
        f"* total: 10\n* correct: 7\n* accuracy: {accuracy}%\n* error: 30.0%\n* macro_f1: 61.5%\n"
        "=> per-class result\n* class: 0 (a)\ttotal: 5\tcorrect: 5\tacc: 100.0%\n* average: 80.0%\nElapsed: 0:00:01\n"
    )


def make_seeds(folder, logs):
    for seed, text in logs.items():
        (folder / seed).mkdir(parents=True)
        (folder / seed / "log.txt").write_text(text)


def test_coop_output_format_and_population_std(tmp_path, capsys):
    make_seeds(tmp_path, {"seed1": training_log(70.0), "seed2": training_log(80.0), "seed3": training_log(66.7)})
    (tmp_path / ".hidden").mkdir()
    parse_test_res.main([str(tmp_path)])
    values = [70.0, 80.0, 66.7]
    assert capsys.readouterr().out == (
        f"Parsing files in {tmp_path}\n"
        f"file: {tmp_path / 'seed1' / 'log.txt'}. accuracy: 70.00%. \n"
        f"file: {tmp_path / 'seed2' / 'log.txt'}. accuracy: 80.00%. \n"
        f"file: {tmp_path / 'seed3' / 'log.txt'}. accuracy: 66.70%. \n"
        "===\n"
        f"Summary of directory: {tmp_path}\n"
        "Number of seeds (log files): 3\n"
        f"* accuracy: {np.mean(values):.2f}% +- {np.std(values):.2f}%\n"
        "===\n"
    )


def test_directory_flag_ci95_keyword_and_returned_dict(tmp_path, capsys):
    make_seeds(tmp_path, {"seed1": training_log(70.0), "seed2": training_log(80.0)})
    parse_test_res.main(["--directory", str(tmp_path), "--ci95"])
    ci = 1.96 * np.std([70, 80]) / np.sqrt(2)
    assert f"* accuracy: 75.00% +- {ci:.2f}%\n" in capsys.readouterr().out
    result = parse_test_res.parse_directory(str(tmp_path), keyword="average", verbose=False)
    assert result["values"] == [80.0, 80.0] and result["mean"] == 80.0 and result["std"] == 0.0
    assert result["files"] == [str(tmp_path / "seed1" / "log.txt"), str(tmp_path / "seed2" / "log.txt")]


def test_both_end_signals_and_the_last_match_after_them(tmp_path):
    make_seeds(tmp_path, {"new": training_log(70.0), "old": training_log(60.0, end="Finished training")})
    assert parse_test_res.parse_directory(str(tmp_path), verbose=False)["values"] == [70.0, 60.0]
    # --test-log starts at the first "=> result": the last accuracy in the file (test, not val) wins
    assert parse_test_res.parse_directory(str(tmp_path), test_log=True, verbose=False)["values"] == [70.0, 60.0]


def test_resumed_seed_uses_its_newest_log_with_a_result(tmp_path):
    make_seeds(tmp_path, {"seed1": "epoch [1/4] ...\n"})  # interrupted run
    (tmp_path / "seed1" / "log.txt-2026-01-02-03-04-05").write_text(training_log(75.0))
    (tmp_path / "seed1" / "log.txt-2026-01-02-03-09-00").write_text("a later run that crashed\n")
    result = parse_test_res.parse_directory(str(tmp_path), verbose=False)
    assert result["files"] == [str(tmp_path / "seed1" / "log.txt-2026-01-02-03-04-05")] and result["values"] == [75.0]


def test_multi_exp_averages_the_experiments(tmp_path, capsys):
    make_seeds(tmp_path / "shots_1", {"seed1": training_log(50.0), "seed2": training_log(60.0)})
    make_seeds(tmp_path / "shots_2", {"seed1": training_log(80.0)})
    parse_test_res.main([str(tmp_path), "--multi-exp"])
    out = capsys.readouterr().out
    assert out.count("Summary of directory") == 2 and out.endswith("Average performance\n* accuracy: 67.50%\n")


def test_no_results_exits_with_a_clear_message(tmp_path):
    make_seeds(tmp_path, {"seed1": "training started\n", "seed2": training_log(70.0, end="Stopped")})
    with pytest.raises(SystemExit) as info:
        parse_test_res.main([str(tmp_path)])
    message = str(info.value.code)
    assert message.startswith(f"parse_test_res.py: Nothing found in {tmp_path}: ")
    assert "'* accuracy: X%'" in message and "'Finish training' or 'Finished training'" in message
    assert "--test-log" in message
    with pytest.raises(SystemExit, match="is not a directory"):
        parse_test_res.main([str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        parse_test_res.main([])  # argparse error: no directory
