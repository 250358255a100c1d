"""The project's Dassl-compatible engine (contract: shared/reference/dassl.md).

Names are exported lazily (PEP 562) so that importing a light sub-module such as
``clip_biomed.engine.utils`` does not pull in the trainer, tensorboard and the data pipeline.
Project code should import Dassl symbols through ``clip_biomed.dassl``; engine sub-modules import
each other directly.
"""
import importlib

_EXPORTS = {
    "clip_biomed.engine.config": ["get_cfg_default", "clean_cfg"],
    "clip_biomed.engine.registry": ["Registry", "check_availability"],
    "clip_biomed.engine.utils": [
        "mkdir_if_missing", "check_isfile", "read_json", "write_json", "listdir_nohidden", "read_image",
        "tolist_if_not", "set_random_seed", "collect_env_info",
    ],
    "clip_biomed.engine.logger": ["setup_logger"],
    "clip_biomed.engine.meters": ["AverageMeter", "MetricMeter"],
    "clip_biomed.engine.checkpoint": [
        "save_checkpoint", "load_checkpoint", "resume_from_checkpoint", "load_pretrained_weights",
    ],
    "clip_biomed.engine.optim": ["build_optimizer", "build_lr_scheduler"],
    "clip_biomed.engine.evaluation": ["EVALUATOR_REGISTRY", "build_evaluator", "compute_accuracy"],
    "clip_biomed.engine.trainer": [
        "TRAINER_REGISTRY", "build_trainer", "TrainerBase", "SimpleTrainer", "TrainerX", "TrainerXU",
    ],
    "clip_biomed.engine.data": [
        "Datum", "DatasetBase", "DATASET_REGISTRY", "build_dataset", "build_transform", "DataManager",
        "DatasetWrapper", "build_data_loader",
    ],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'clip_biomed.engine' has no attribute '{name}'")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
