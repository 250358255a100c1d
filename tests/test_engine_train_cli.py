"""train.py's config assembly: merge order, extend_cfg hooks, plugins, error messages, light --help."""
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

import train

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse(*argv):
    return train.build_parser().parse_args([str(a) for a in argv])


@pytest.fixture
def yamls(tmp_path):
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text("DATASET:\n  NAME: DS\n  SUBSAMPLE_CLASSES: base\nOPTIM:\n  LR: 0.1\nSEED: 5\n")
    method = tmp_path / "method.yaml"
    method.write_text("OPTIM:\n  LR: 0.2\n  MAX_EPOCH: 7\nTRAINER:\n  NAME: FromYaml\n")
    return dataset, method


def test_merge_order_defaults_extend_dataset_method_flags_opts(yamls):
    dataset, method = yamls
    args = parse("--dataset-config-file", dataset, "--config-file", method, "--trainer", "FromFlag",
                 "--output-dir", "out", "--seed", 0, "OPTIM.MAX_EPOCH", 9, "TRAINER.NAME", "FromOpts")
    cfg = train.setup_cfg(args)
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "base"  # extend_cfg ran before the dataset file
    assert cfg.OPTIM.LR == 0.2  # method file after dataset file
    assert cfg.SEED == 0  # the flag after the files, and --seed 0 is honoured (CoOp drops it)
    assert cfg.OPTIM.MAX_EPOCH == 9 and cfg.TRAINER.NAME == "FromOpts"  # opts last
    assert cfg.OUTPUT_DIR == "out" and cfg.is_frozen()
    assert train.setup_cfg(parse("--dataset-config-file", dataset)).SEED == 5  # no flag: the file's seed
    assert train.setup_cfg(parse()).DATASET.SUBSAMPLE_CLASSES == "all"


def test_flags_fill_their_keys():
    args = parse("--root", "r", "--resume", "res", "--source-domains", "a", "b", "--target-domains", "c",
                 "--transforms", "random_flip", "normalize", "--backbone", "bb", "--head", "hd")
    cfg = train.setup_cfg(args)
    assert (cfg.DATASET.ROOT, cfg.RESUME, cfg.MODEL.BACKBONE.NAME, cfg.MODEL.HEAD.NAME) == ("r", "res", "bb", "hd")
    assert list(cfg.DATASET.SOURCE_DOMAINS) == ["a", "b"] and list(cfg.DATASET.TARGET_DOMAINS) == ["c"]
    assert list(cfg.INPUT.TRANSFORMS) == ["random_flip", "normalize"]


def test_bad_key_in_a_file_names_the_file_the_key_and_the_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(train.ConfigError) as info:
        train.setup_cfg(parse("--config-file", bad))
    message = str(info.value)
    assert message.startswith(f"config file {bad}: Non-existent config key: OPTIM.LRR (did you mean OPTIM.LR?)")
    assert "valid keys under OPTIM: " in message and "WARMUP_EPOCH" in message


def test_bad_key_or_type_in_opts(tmp_path):
    with pytest.raises(train.ConfigError, match=r"command-line opts .*Non-existent key: TRAINER\.COOP\.N_CTX.*"
                                                 r"trainer keys are added by the trainer modules' extend_cfg"):
        train.setup_cfg(parse("TRAINER.COOP.N_CTX", 4))
    with pytest.raises(train.ConfigError, match=r"command-line opts .*Type mismatch .* for config key: OPTIM\.LR"):
        train.setup_cfg(parse("OPTIM.LR", 1))
    with pytest.raises(train.ConfigError, match="odd length"):
        train.setup_cfg(parse("OPTIM.LR"))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("OPTIM:\n  MAX_EPOCH: ten\n")
    with pytest.raises(train.ConfigError, match=rf"config file {wrong}: Type mismatch .*OPTIM\.MAX_EPOCH"):
        train.setup_cfg(parse("--config-file", wrong))
    wrong.write_text("OPTIM:\n  LR: [0.1\n")
    with pytest.raises(train.ConfigError, match=rf"config file {wrong}: .*flow sequence"):
        train.setup_cfg(parse("--config-file", wrong))


def test_config_error_exits_cleanly_from_the_cli(tmp_path):
    shutil.copy(REPO_ROOT / "train.py", tmp_path / "train.py")  # away from the repo's trainers/datasets
    result = subprocess.run([sys.executable, "train.py", "--output-dir", str(tmp_path), "OPTIM.NAMEE", "sgd"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "train.py: config error: command-line opts" in result.stderr and "did you mean OPTIM.NAME?" in result.stderr


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A repo root whose trainers/ and datasets/ packages record that they were imported."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "__init__.py").write_text("IMPORTED = True\n")
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "__init__.py").write_text(
        "from yacs.config import CfgNode as CN\n\n"
        "def extend_cfg(cfg):\n    cfg.TRAINER.FAKE = CN()\n    cfg.TRAINER.FAKE.N_CTX = 4\n"
    )
    (tmp_path / "extra_plugin.py").write_text("def extend_cfg(cfg):\n    cfg.TRAINER.EXTRA = 1.5\n")
    monkeypatch.setattr(train, "REPO_ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {name: sys.modules.pop(name, None) for name in ("datasets", "trainers", "extra_plugin")}
    yield tmp_path
    for name, module in saved.items():
        sys.modules.pop(name, None)
        if module is not None:
            sys.modules[name] = module


def test_repo_packages_and_plugins_extend_the_config(fake_repo, monkeypatch):
    monkeypatch.setenv(train.PLUGINS_ENV_VAR, " extra_plugin ,")
    args = parse("--plugin", "json", "TRAINER.FAKE.N_CTX", 16, "TRAINER.EXTRA", 2.5)
    assert train.plugin_names(args) == ["extra_plugin", "json"]
    plugins = train.import_plugins(train.plugin_names(args))
    assert [m.__name__ for m in plugins] == ["datasets", "trainers", "extra_plugin", "json"]
    assert plugins[0].IMPORTED and sys.path[0] == str(fake_repo)
    cfg = train.setup_cfg(args, plugins)
    assert cfg.TRAINER.FAKE.N_CTX == 16 and cfg.TRAINER.EXTRA == 2.5 and cfg.DATASET.SUBSAMPLE_CLASSES == "all"


def test_eval_checkpoint_check_names_what_is_missing(tmp_path):
    class Trainer:
        def __init__(self, names):
            self.names = names

        def get_model_names(self):
            return self.names

    train.check_eval_checkpoint(Trainer([]), "", None)  # zero-shot style: nothing to load, nothing to check
    with pytest.raises(FileNotFoundError, match="no --model-dir was given; pass --model-dir"):
        train.check_eval_checkpoint(Trainer(["prompt_learner"]), "", None)
    (tmp_path / "prompt_learner").mkdir()
    (tmp_path / "prompt_learner" / "model.pth.tar-50").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r'No model at ".*-100" \(found: model.pth.tar-50\)'):
        train.check_eval_checkpoint(Trainer(["prompt_learner"]), str(tmp_path), 100)
    with pytest.raises(FileNotFoundError, match=r"no model-best.pth.tar and no finished run's checkpoint pointer"):
        train.check_eval_checkpoint(Trainer(["prompt_learner"]), str(tmp_path), None)
    (tmp_path / "prompt_learner" / "checkpoint").write_text("model.pth.tar-50\n")
    train.check_eval_checkpoint(Trainer(["prompt_learner"]), str(tmp_path), None)  # the run's final checkpoint
    train.check_eval_checkpoint(Trainer(["prompt_learner"]), str(tmp_path), 50)


def test_help_does_not_import_torch():
    code = ("import runpy, sys\nsys.argv = ['train.py', '--help']\ntry:\n    runpy.run_path('train.py', "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "--eval-only" in result.stdout and result.stdout.split()[-1] == "False", result.stderr


def test_print_args_matches_coop(capsys):
    from yacs.config import CfgNode as CN

    train.print_args(Namespace(seed=1, root="r"), CN({"A": 1}))
    assert capsys.readouterr().out == (
        "***************\n** Arguments **\n***************\nroot: r\nseed: 1\n"
        "************\n** Config **\n************\nA: 1\n"
    )


def test_import_train_registers_the_project_trainers_and_datasets_once(tmp_path):
    code = ("import train\nfrom clip_biomed.dassl import DATASET_REGISTRY, TRAINER_REGISTRY\n"
            "train.import_plugins(['json'])  # again, with a plugin: registering is idempotent\n"
            "print(sorted({'BiomedCoOp', 'BiomedCoOp_PMCCLIP'} & set(TRAINER_REGISTRY.registered_names())),"
            " sorted({'BTMRI', 'FolderDataset'} & set(DATASET_REGISTRY.registered_names())))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.split("\n")[-2] == "['BiomedCoOp', 'BiomedCoOp_PMCCLIP'] ['BTMRI', 'FolderDataset']", \
        result.stderr


def test_flags_after_the_options_say_where_they_belong():
    with pytest.raises(train.ConfigError, match=r"the flag\(s\) --eval-only --seed come after the KEY VALUE options"
                                                r".*put every flag before the first option \(OPTIM.LR\)"):
        train.setup_cfg(parse("OPTIM.LR", 0.1, "--eval-only", "--seed", 3))  # even length: yacs would say "key"
    with pytest.raises(train.ConfigError, match=r"--evalonly is not a train.py flag \(python train.py --help"):
        train.setup_cfg(parse("OPTIM.LR", 0.1, "--evalonly"))


def test_data_loader_workers_are_capped_to_the_cpus(monkeypatch, capsys):
    assert 1 <= train.available_cpus() <= os.cpu_count()
    monkeypatch.setattr(train, "available_cpus", lambda: 3)
    assert train.setup_cfg(parse("DATALOADER.NUM_WORKERS", 8)).DATALOADER.NUM_WORKERS == 3
    assert "DATALOADER.NUM_WORKERS 8 capped to 3, the CPUs available here" in capsys.readouterr().out
    assert train.setup_cfg(parse("DATALOADER.NUM_WORKERS", 2)).DATALOADER.NUM_WORKERS == 2
    assert "capped" not in capsys.readouterr().out


def test_the_default_output_dir_is_never_inside_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT)
    implicit = parse()
    with pytest.raises(train.ConfigError, match=r"no --output-dir given, and the default ./output is inside the "
                                                r"repository .*pass --output-dir <folder>"):
        train.check_output_dir(train.setup_cfg(implicit), implicit)
    asked = parse("--output-dir", "output/run1")
    train.check_output_dir(train.setup_cfg(asked), asked)  # asked for: written where asked
    monkeypatch.chdir(tmp_path)
    train.check_output_dir(train.setup_cfg(implicit), implicit)  # ./output of the user's own folder


def test_an_error_is_one_line_before_the_config_dump_with_the_traceback_in_the_log(tmp_path, monkeypatch, tiny_biomedclip,
                                                                                  train_main_in_process):
    from clip_biomed.backbones.testing import tiny_name

    argv = ["--root", str(tmp_path / "no_data"), "--trainer", "BiomedCoOp", "--seed", "1",
            "--dataset-config-file", str(REPO_ROOT / "configs" / "datasets" / "btmri.yaml")]
    model = ["MODEL.BACKBONE.NAME", tiny_name(tiny_biomedclip)]  # found, so the missing dataset is the error
    monkeypatch.delenv(train.DEBUG_ENV_VAR, raising=False)
    with pytest.raises(SystemExit) as info:
        train.run_cli([*argv, "--output-dir", str(tmp_path / "out"), *model])
    message = str(info.value.code)
    assert message.startswith("train.py: error: FileNotFoundError: Dataset BTMRI not found (missing ")
    assert message.endswith(f"(full traceback in {tmp_path / 'out' / 'log.txt'}; CLIP_BIOMED_DEBUG=1 prints it here)")
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and "** Config **" not in log
    monkeypatch.setenv(train.DEBUG_ENV_VAR, "1")
    with pytest.raises(FileNotFoundError, match="Dataset BTMRI not found"):
        train.run_cli([*argv, "--output-dir", str(tmp_path / "debug"), *model])
