"""The seam clip_biomed/dassl.py: engine selection, exported names, and (only where the real Dassl is
installed) the toy plugin trained end to end on the real Dassl with CLIP_BIOMED_ENGINE=dassl."""
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clip_biomed.dassl as seam
from clip_biomed.engine import checkpoint, optim, trainer

# The toy plugin and its fixtures, whether pytest imports tests/ as a package or as plain modules.
toy = importlib.import_module(__name__.replace("test_engine_dassl", "test_engine_trainer"))
scripts_dir, toy_root = toy.scripts_dir, toy.toy_root  # fixtures, used by name

DASSL_INSTALLED = importlib.util.find_spec("dassl") is not None
REPO = Path(__file__).resolve().parents[1]


def test_seam_exports_every_symbol_of_the_brief():
    names = """get_cfg_default TRAINER_REGISTRY TrainerX TrainerBase SimpleTrainer build_trainer DATASET_REGISTRY
        Datum DatasetBase build_dataset DataManager DatasetWrapper build_data_loader build_transform
        EVALUATOR_REGISTRY build_evaluator compute_accuracy setup_logger set_random_seed collect_env_info
        load_pretrained_weights load_checkpoint save_checkpoint resume_from_checkpoint mkdir_if_missing
        listdir_nohidden read_json write_json check_isfile read_image Registry check_availability tolist_if_not
        build_optimizer build_lr_scheduler AverageMeter MetricMeter ENGINE""".split()
    assert set(names) <= set(seam.__all__)
    assert all(hasattr(seam, name) for name in seam.__all__)
    # always the project's own, whichever engine is active
    assert seam.build_lr_scheduler is optim.build_lr_scheduler and seam.load_checkpoint is checkpoint.load_checkpoint


@pytest.mark.skipif(os.environ.get("CLIP_BIOMED_ENGINE") != "builtin", reason="tests/conftest.py sets builtin")
def test_builtin_engine_is_selected_by_the_env_var():
    assert seam.ENGINE == "builtin" and seam.TrainerX is trainer.TrainerX
    assert seam.TRAINER_REGISTRY is trainer.TRAINER_REGISTRY


@pytest.mark.parametrize("value,expected", [("builtin", "builtin"), (" Builtin ", "builtin"),
                                            ("", "dassl" if DASSL_INSTALLED else "builtin")])
def test_engine_selection(monkeypatch, value, expected):
    monkeypatch.setenv(seam.ENGINE_ENV_VAR, value)
    assert seam._select_engine() == expected


def test_bad_engine_names_the_choices(monkeypatch):
    monkeypatch.setenv(seam.ENGINE_ENV_VAR, "torch")
    with pytest.raises(ValueError, match="must be 'builtin' or 'dassl'"):
        seam._select_engine()


@pytest.mark.skipif(DASSL_INSTALLED, reason="Dassl is installed here")
def test_requesting_a_missing_dassl_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv(seam.ENGINE_ENV_VAR, "dassl")
    with pytest.raises(ImportError, match=r"Dassl cannot be imported .*python setup.py develop.*=builtin"):
        seam._select_engine()


@pytest.mark.skipif(not DASSL_INSTALLED, reason="needs the real Dassl (github.com/KaiyangZhou/Dassl.pytorch)")
def test_toy_plugin_end_to_end_on_real_dassl(scripts_dir, toy_root, tmp_path):
    env = {"CLIP_BIOMED_ENGINE": "dassl"}
    out = tmp_path / "ToyShapes" / "ToyTrainer"
    crashed = toy.train_toy(scripts_dir, toy_root, out / "seed1", "--seed", 1, "TRAIN.CHECKPOINT_FREQ", 2,
                            env=dict(env, **{toy.STOP_ENV: "2"}), check=False)
    assert "simulated crash after epoch 2" in crashed.stderr
    resumed = toy.train_toy(scripts_dir, toy_root, out / "seed1", "--seed", 1, env=env).stdout
    assert "Dassl engine: dassl\n" in resumed
    assert "Previous epoch: 2" in resumed and "Loaded scheduler" in resumed and "Finish training" in resumed
    uninterrupted = toy.train_toy(scripts_dir, toy_root, out / "seed2", "--seed", 2, "TEST.FINAL_MODEL",
                                  "best_val", env=env).stdout
    assert toy.lrs_by_epoch(resumed) == {k: v for k, v in toy.lrs_by_epoch(uninterrupted).items() if k >= 3}
    assert "Deploy the model with the best val performance" in uninterrupted

    evaluated = toy.train_toy(scripts_dir, toy_root, tmp_path / "eval" / "seed2", "--eval-only", "--model-dir",
                              out / "seed2", "--load-epoch", 4, env=env).stdout
    assert toy.RESULT_BLOCK.search(evaluated)
    parsed = toy.run_script(scripts_dir, "parse_test_res.py", out, env=env).stdout
    assert "Number of seeds (log files): 2" in parsed


# Dassl 0.6.3's module layout (dassl.md §1, §8), re-exporting the built-in engine: enough to run the
# seam's Dassl branch where the real Dassl is not installed.
STUB_DASSL = {
    "__init__.py": "__version__ = '0.6.3-stub'\n",
    "config/__init__.py": "from clip_biomed.engine.config import get_cfg_default\n",
    "data/__init__.py": "from clip_biomed.engine.data import DataManager, DatasetWrapper\n",
    "data/data_manager.py": "from clip_biomed.engine.data import build_data_loader\n",
    "data/datasets/__init__.py": "from clip_biomed.engine.data import DATASET_REGISTRY, DatasetBase, Datum, "
                                 "build_dataset\n",
    "data/transforms/__init__.py": "from clip_biomed.engine.data import build_transform\n",
    "engine/__init__.py": "from clip_biomed.engine.trainer import *\n",
    "evaluation/__init__.py": "from clip_biomed.engine.evaluation import EVALUATOR_REGISTRY, Classification, "
                              "build_evaluator\n",
    "metrics/__init__.py": "from clip_biomed.engine.evaluation import compute_accuracy\n",
    "optim/__init__.py": "from clip_biomed.engine.optim import build_optimizer\n",
    "utils/__init__.py": "".join(f"from clip_biomed.engine.{m} import *\n"
                                 for m in ("utils", "logger", "meters", "registry", "checkpoint")),
}


@pytest.mark.skipif(DASSL_INSTALLED, reason="the real Dassl is installed (tested above)")
def test_dassl_branch_imports_from_dassls_module_paths(tmp_path):
    for relative, text in STUB_DASSL.items():
        path = tmp_path / "dassl" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    code = ("import clip_biomed.dassl as s, dassl.engine, dassl.utils\n"
            "assert s.ENGINE == 'dassl' and s.TrainerX is dassl.engine.TrainerX\n"
            "assert s.Registry is dassl.utils.Registry and s.build_lr_scheduler is not None\n"
            "assert all(hasattr(s, n) for n in s.__all__)\n"
            "import clip_biomed.evaluation as e, dassl.evaluation as d\n"
            "assert issubclass(e.ClinicalClassification, d.Classification)\n"
            "assert d.EVALUATOR_REGISTRY.get('ClinicalClassification') is e.ClinicalClassification\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, CLIP_BIOMED_ENGINE="", PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"))
    assert result.returncode == 0, result.stderr
