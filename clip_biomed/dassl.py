"""THE seam: every Dassl symbol the project uses is imported from here.

Which engine provides them (``ENGINE``):
- ``"dassl"``: the real Dassl (https://github.com/KaiyangZhou/Dassl.pytorch), used when ``import dassl``
  works, or when ``CLIP_BIOMED_ENGINE=dassl`` (then a missing Dassl is an ImportError);
- ``"builtin"``: the project's Dassl-compatible engine (``clip_biomed.engine``), used when Dassl is not
  installed, or when ``CLIP_BIOMED_ENGINE=builtin``.

Only one engine's registries are ever used, so trainers and datasets register exactly once.
``build_lr_scheduler``, ``load_checkpoint`` and ``load_pretrained_weights`` (which uses it) always
come from the project's engine: Dassl's warmup schedulers crash on torch >= 2.7 and pickle their
successor into checkpoints, which Dassl's ``load_checkpoint`` cannot read under torch >= 2.6's
``weights_only`` default (dassl.md §9, §11).
The project's versions write plain state dicts and read both formats with ``weights_only=True``.
``model_file_name`` (the checkpoint file names) is the project's helper, exported here for trainers.
"""
import os

ENGINE_ENV_VAR = "CLIP_BIOMED_ENGINE"
_INSTALL_HINT = (
    "Install Dassl.pytorch (not on PyPI): git clone https://github.com/KaiyangZhou/Dassl.pytorch && "
    "cd Dassl.pytorch && pip install -r requirements.txt && python setup.py develop; "
    f"or use the built-in engine with {ENGINE_ENV_VAR}=builtin"
)


def _select_engine():
    requested = os.environ.get(ENGINE_ENV_VAR, "").strip().lower()
    if requested not in ("", "builtin", "dassl"):
        raise ValueError(f"{ENGINE_ENV_VAR} must be 'builtin' or 'dassl' (or unset), but got {requested!r}")
    if requested == "builtin":
        return "builtin"
    try:
        import dassl  # noqa: F401
    except ImportError as e:
        if requested == "dassl":
            raise ImportError(f"{ENGINE_ENV_VAR}=dassl but Dassl cannot be imported ({e}). {_INSTALL_HINT}") from e
        return "builtin"
    return "dassl"


ENGINE = _select_engine()

if ENGINE == "dassl":
    try:
        from dassl.config import get_cfg_default
        from dassl.data import DataManager, DatasetWrapper
        from dassl.data.data_manager import build_data_loader
        from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
        from dassl.data.transforms import build_transform
        from dassl.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer
        from dassl.evaluation import EVALUATOR_REGISTRY, Classification, build_evaluator
        from dassl.metrics import compute_accuracy
        from dassl.optim import build_optimizer
        from dassl.utils import (
            AverageMeter, MetricMeter, Registry, check_availability, check_isfile, collect_env_info,
            listdir_nohidden, mkdir_if_missing, read_image, read_json,
            resume_from_checkpoint, save_checkpoint, set_random_seed, setup_logger, tolist_if_not, write_json,
        )
    except ImportError as e:
        raise ImportError(
            f"Dassl is installed but importing it failed ({e}); install its requirements "
            f"(e.g. pip install -r Dassl.pytorch/requirements.txt), or set {ENGINE_ENV_VAR}=builtin"
        ) from e
else:
    from clip_biomed.engine.checkpoint import resume_from_checkpoint, save_checkpoint
    from clip_biomed.engine.config import get_cfg_default
    from clip_biomed.engine.data import (
        DATASET_REGISTRY, DataManager, DatasetBase, DatasetWrapper, Datum, build_data_loader, build_dataset,
        build_transform,
    )
    from clip_biomed.engine.evaluation import EVALUATOR_REGISTRY, Classification, build_evaluator, compute_accuracy
    from clip_biomed.engine.logger import setup_logger
    from clip_biomed.engine.meters import AverageMeter, MetricMeter
    from clip_biomed.engine.optim import build_optimizer
    from clip_biomed.engine.registry import Registry, check_availability
    from clip_biomed.engine.trainer import (
        TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, TrainerXU, build_trainer,
    )
    from clip_biomed.engine.utils import (
        check_isfile, collect_env_info, listdir_nohidden, mkdir_if_missing, read_image, read_json,
        set_random_seed, tolist_if_not, write_json,
    )

# Always the project's own (see the module docstring; load_pretrained_weights goes through load_checkpoint).
from clip_biomed.engine.checkpoint import load_checkpoint, load_pretrained_weights, model_file_name  # noqa: E402
from clip_biomed.engine.optim import build_lr_scheduler  # noqa: E402

__all__ = [
    "ENGINE", "get_cfg_default", "TRAINER_REGISTRY", "TrainerX", "TrainerXU", "TrainerBase", "SimpleTrainer",
    "build_trainer", "DATASET_REGISTRY", "Datum", "DatasetBase", "build_dataset", "DataManager", "DatasetWrapper",
    "build_data_loader", "build_transform", "EVALUATOR_REGISTRY", "build_evaluator", "compute_accuracy",
    "setup_logger", "set_random_seed", "collect_env_info", "load_pretrained_weights", "load_checkpoint",
    "save_checkpoint", "resume_from_checkpoint", "mkdir_if_missing", "listdir_nohidden", "read_json", "write_json",
    "check_isfile", "read_image", "Registry", "check_availability", "tolist_if_not", "build_optimizer",
    "build_lr_scheduler", "AverageMeter", "MetricMeter", "model_file_name", "Classification",
]
