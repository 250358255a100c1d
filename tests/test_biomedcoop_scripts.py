"""The user's commands: few_shot.sh, base2new.sh and the published-checkpoint evaluation, run as a
user runs them (bash, train.py subprocesses) on a tiny local model and synthetic data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clip_biomed.backbones.testing import tiny_name
from tests.test_biomedcoop_trainer import write_published_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["OPTIM.MAX_EPOCH", "2", "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "TRAINER.BIOMEDCOOP.N_PROMPTS", "8"]
RUN_TAIL = "shots_{shots}/BiomedCoOp_{tag}/nctx4_cscFalse_ctpend"


def run(cmd, env, cwd, status=0):
    """The command's stdout and stderr (notices such as skipped runs go to stderr)."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == status, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture
def env(synthetic_root, tmp_path):
    return {**os.environ, "DATA": str(synthetic_root), "OUTPUT": str(tmp_path / "output"),
            "PYTHON": sys.executable, "SEEDS": "1 2", "OUTPUT_EVAL": str(tmp_path / "output_eval"),
            "CKPT": str(tmp_path / "checkpoints")}


def parse(directory, *flags):
    return run([sys.executable, os.path.join(REPO, "parse_test_res.py"), *flags, str(directory)], os.environ, REPO)


def test_few_shot_script_trains_every_seed_and_skips_finished_runs(env, tiny_biomedclip, tmp_path):
    backbone = tiny_name(tiny_biomedclip)
    cmd = ["bash", os.path.join(REPO, "scripts/biomedcoop/few_shot.sh"), "btmri", "4", backbone, *FAST]
    run(cmd, env, tmp_path)
    runs = tmp_path / "output" / "btmri" / RUN_TAIL.format(shots=4, tag=tiny_biomedclip.name)
    for seed in (1, 2):
        assert (runs / f"seed{seed}" / "prompt_learner" / "model.pth.tar-2").is_file()
    summary = parse(runs)
    assert "Number of seeds (log files): 2" in summary and "* accuracy:" in summary

    again = run(cmd, env, tmp_path)
    assert again.count("Oops! The results exist at") == 2 and "Finish training" not in again


def test_base2new_script_trains_base_and_tests_new(env, tiny_biomedclip, tmp_path):
    env = {**env, "SEEDS": "1"}
    run(["bash", os.path.join(REPO, "scripts/biomedcoop/base2new.sh"), "btmri", tiny_name(tiny_biomedclip), *FAST],
        env, tmp_path)
    tail = "btmri/" + RUN_TAIL.format(shots=16, tag=tiny_biomedclip.name)
    base = tmp_path / "output/base2new/train_base" / tail
    new = tmp_path / "output/base2new/test_new" / tail
    base_log = (base / "seed1" / "log.txt").read_text()
    new_log = (new / "seed1" / "log.txt").read_text()
    assert "# classes  2" in base_log and "# classes  2" in new_log
    split = json.loads((Path(env["DATA"]) / "BTMRI" / "split_BTMRI.json").read_text())
    n_base_test = sum(1 for _, label, _ in split["test"] if label < 2)
    assert f"* total: {n_base_test}" in base_log
    assert f"* total: {len(split['test']) - n_base_test}" in new_log
    assert 'model.pth.tar-2" (epoch = 2)' in new_log
    assert "* accuracy:" in parse(base)
    assert "* accuracy:" in parse(new, "--test-log")


def test_eval_script_evaluates_published_checkpoints_for_every_seed(env, tiny_biomedclip, tmp_path):
    from clip_biomed.backbones import build_backbone
    from clip_biomed.published_checkpoints import checkpoint_path

    ctx_dim = build_backbone(tiny_name(tiny_biomedclip), device="cpu").ctx_dim
    for seed in (1, 2):
        path = tmp_path / "checkpoints" / checkpoint_path("few_shot", "btmri", 4, seed)
        write_published_checkpoint(str(path), torch.randn(4, ctx_dim))
    env = {**env, "HF_HUB_OFFLINE": "1"}
    run(["bash", os.path.join(REPO, "scripts/biomedcoop/eval_fewshot.sh"), "btmri", "4",
         tiny_name(tiny_biomedclip), *FAST], env, tmp_path)
    results = tmp_path / "output_eval/btmri" / RUN_TAIL.format(shots=4, tag="BiomedCLIP")
    summary = parse(results, "--test-log")
    assert "Number of seeds (log files): 2" in summary


def test_interpret_prompt_lists_nearest_words_of_the_recorded_backbone(env, tiny_biomedclip, tmp_path, capsys):
    from clip_biomed.interpret_prompt import main as interpret
    from tests.test_biomedcoop_trainer import make_trainer

    trainer = make_trainer(env["DATA"], tiny_biomedclip, tmp_path / "run", "OPTIM.MAX_EPOCH", "1")
    trainer.train()
    capsys.readouterr()
    checkpoint = str(tmp_path / "run/prompt_learner/model.pth.tar-1")
    assert interpret([checkpoint, "--topk", "3"]) == 0  # no --backbone: the one the checkpoint records
    out = capsys.readouterr().out
    assert f"Backbone: {tiny_name(tiny_biomedclip)} (recorded in the checkpoint)" in out
    lines = [line for line in out.splitlines() if line.startswith("ctx ")]
    assert len(lines) == 4 and all(line.count("(") == 3 for line in lines)

    moved = tmp_path / "moved-model"
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["_extra_state"]["backbone"] = f"local-dir:{moved}"
    torch.save(state, checkpoint)
    with pytest.raises(SystemExit, match=rf"cannot build the backbone local-dir:{moved} \(recorded in the "
                                         r"checkpoint\).*\nPass --backbone NAME"):
        interpret([checkpoint])
    assert interpret([checkpoint, "--backbone", tiny_name(tiny_biomedclip)]) == 0
    assert f"Warning: the checkpoint was trained with local-dir:{moved}" in capsys.readouterr().out

    published = tmp_path / "published.pth.tar"
    write_published_checkpoint(str(published), torch.randn(4, trainer.backbone.ctx_dim))
    with pytest.raises(SystemExit, match=r"backbone BiomedCLIP \(the checkpoint records none: the published "):
        interpret([str(published)])  # offline here: BiomedCLIP cannot be fetched, and the error says so


def folder_dataset(tmp_path):
    """Your own data as a user has it: a folder of class folders, a dataset YAML and a prompt file
    in a config folder outside the repository."""
    from clip_biomed.data_tools.synthetic import write_synthetic_dataset
    from clip_biomed.prompts import PromptEnsemble, save_prompt_file

    classes = ["kidney cyst", "kidney stone"]
    images = write_synthetic_dataset(str(tmp_path / "images"), "scans", classes, layout="folder", per_class=10,
                                     size=32)
    configs = tmp_path / "my_configs"
    (configs / "datasets").mkdir(parents=True)
    (configs / "datasets" / "own_scans.yaml").write_text(
        f'DATASET:\n  NAME: "FolderDataset"\n  FOLDER:\n    NAME: "MyData"\n    IMAGE_DIR: "{images}"\n')
    prompts = tmp_path / "mydata_prompts.json"
    save_prompt_file(PromptEnsemble("MyData", "CT", {c: [f"a CT of a {c}, view {i}" for i in range(8)]
                                                     for c in classes}), prompts)
    return configs, prompts


def test_few_shot_script_on_your_own_data_with_configs_outside_the_repository(env, tiny_biomedclip, tmp_path):
    configs, prompts = folder_dataset(tmp_path)
    env = {**env, "SEEDS": "1", "CLIP_BIOMED_CONFIGS": str(configs), "DATA": str(tmp_path / "data")}
    cmd = ["bash", os.path.join(REPO, "scripts/biomedcoop/few_shot.sh"), "own_scans", "4", tiny_name(tiny_biomedclip),
           *FAST, "OPTIM.MAX_EPOCH", "1", "TRAINER.BIOMEDCOOP.PROMPTS", str(prompts)]
    out = run(cmd, env, tmp_path)
    generic = os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot.yaml")
    assert f"No few_shot/own_scans.yaml in {configs}/trainers/BiomedCoOp {REPO}/configs/trainers/BiomedCoOp; " \
           f"using the generic {generic}" in out
    run_dir = tmp_path / "output" / "own_scans" / RUN_TAIL.format(shots=4, tag=tiny_biomedclip.name) / "seed1"
    log = (run_dir / "log.txt").read_text()
    assert "# classes  2" in log and "* accuracy:" in log
    assert (tmp_path / "data" / "MyData" / "split_MyData.json").is_file()  # DATA, not the repository

    again = run(cmd, env, tmp_path)
    assert f"Oops! The results exist at {tmp_path / 'output'}" in again and "Finish training" not in again
    other = run([*cmd, "OPTIM.LR", "0.01"], env, tmp_path, status=2)  # other settings: old results not reused
    assert f"{run_dir} holds a run made with other arguments, which is neither reused nor resumed" in other
    assert "this one: " in other and "OPTIM.LR 0.01" in other and f"Delete {run_dir}" in other


def test_own_data_without_prompts_names_its_classes_and_the_command_to_write_them(tiny_biomedclip, tmp_path):
    import train
    from clip_biomed.dassl import build_trainer

    configs, _ = folder_dataset(tmp_path)
    args = train.build_parser().parse_args([
        "--root", str(tmp_path / "data"), "--trainer", "BiomedCoOp", "--output-dir", str(tmp_path / "out"),
        "--dataset-config-file", str(configs / "datasets" / "own_scans.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot.yaml"),
        "MODEL.BACKBONE.NAME", tiny_name(tiny_biomedclip), *FAST])
    with pytest.raises(ValueError) as info:
        build_trainer(train.setup_cfg(args, train.PROJECT_PLUGINS))
    message = str(info.value)
    assert "No prompt ensemble for dataset 'MyData'" in message and "'kidney cyst', 'kidney stone'" in message
    assert ("python -m clip_biomed.prompts generate --classes 'kidney cyst,kidney stone' --dataset MyData "
            "--modality '<imaging modality, e.g. chest X-ray>' --n 8 --out prompts/MyData.json") in message
    assert message.endswith("then add the options  TRAINER.BIOMEDCOOP.PROMPTS prompts/MyData.json")


def test_dataset_given_as_a_path_and_unknown_names(env, tmp_path):
    configs, _ = folder_dataset(tmp_path)
    yaml_path = configs / "datasets" / "own_scans.yaml"
    script = os.path.join(REPO, "scripts/biomedcoop/few_shot.sh")
    dry = run(["bash", script, str(yaml_path), "4"], {**env, "DRY_RUN": "1", "SEEDS": "1"}, tmp_path)
    assert f"--dataset-config-file {yaml_path} " in dry and "/own_scans/shots_4/BiomedCoOp_BiomedCLIP/" in dry
    unknown = run(["bash", script, "own_scans", "4"], {**env, "DRY_RUN": "1"}, tmp_path, status=2)
    assert "Unknown dataset 'own_scans'" in unknown and "btmri" in unknown and "CLIP_BIOMED_CONFIGS" in unknown
