"""CoOp-compatible entry point: train or evaluate one trainer on one dataset.

Config merge order: engine defaults -> extend_cfg (DATASET.SUBSAMPLE_CLASSES and every trainer's
keys) -> --dataset-config-file -> --config-file -> flags -> trailing KEY VALUE opts -> freeze.

Differences from CoOp's train.py (docs/engine.md):
- ``--seed 0`` seeds (CoOp ignores it because 0 is falsy); any seed >= 0 fixes the RNGs.
- ``--eval-only`` fails with FileNotFoundError if the trainer has learned weights and --model-dir
  is missing, absent, or lacks the requested checkpoint (CoOp silently tests an untrained model).
- A bad config key or value names the file (or the opts) it came from.
- Every run folder gets ``run_info.json`` (the config and the class names in label order), from which
  ``python -m clip_biomed.predict`` rebuilds the trainer without the dataset.
- ``--plugin MODULE`` (repeatable) / ``CLIP_BIOMED_PLUGINS=mod1,mod2`` import extra modules that
  register trainers or datasets (e.g. in tests); a module's ``extend_cfg(cfg)`` is called if present.
"""
import argparse
import importlib
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.abspath(__file__))
PLUGINS_ENV_VAR = "CLIP_BIOMED_PLUGINS"


class ConfigError(ValueError):
    """A config file or opts list that does not fit the config tree."""


def import_plugins(extra_modules):
    """Import the repo-root ``datasets`` and ``trainers`` packages (if present) and the extra
    plugin modules; return the modules imported."""
    if sys.path[:1] != [REPO_ROOT]:  # first, so that no installed `datasets` package shadows ours
        sys.path.insert(0, REPO_ROOT)
    modules = []
    for name in ("datasets", "trainers"):
        if osp.isdir(osp.join(REPO_ROOT, name)):
            modules.append(importlib.import_module(name))
    for name in extra_modules:
        modules.append(importlib.import_module(name))
    return modules


def plugin_names(args):
    from_env = [m.strip() for m in os.environ.get(PLUGINS_ENV_VAR, "").split(",") if m.strip()]
    return from_env + list(args.plugin)


def extend_cfg(cfg, plugins=()):
    """Add the project's config keys: DATASET.SUBSAMPLE_CLASSES, then each plugin's own keys
    (``trainers.extend_cfg`` adds every trainer's TRAINER.<NAME> node)."""
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    for module in plugins:
        if callable(getattr(module, "extend_cfg", None)):
            module.extend_cfg(cfg)


def reset_cfg(cfg, args):
    """Copy the command-line flags that were given into the config."""
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed is not None:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head


def _explain_bad_key(cfg, message):
    """Extend yacs' "Non-existent (config) key: A.B.C" with the valid keys where the path stops."""
    import difflib

    key = message.rsplit(":", 1)[-1].strip()
    node, path = cfg, []
    for part in key.split("."):
        if not isinstance(node, dict):
            return f"{message} ({'.'.join(path)} is a value, not a group of keys)"
        if part not in node:
            break
        node = node[part]
        path.append(part)
    valid = sorted(node.keys())
    close = difflib.get_close_matches(part, valid, n=1)
    hint = f" (did you mean {'.'.join(path + close)}?)" if close else ""
    where = ".".join(path) or "the top level"
    if path[:1] == ["TRAINER"]:
        where += " (trainer keys are added by the trainer modules' extend_cfg)"
    return f"{message}{hint}; valid keys under {where}: {', '.join(valid)}"


def _merge(cfg, source, merge_fn):
    """Run a yacs merge; re-raise its errors as ConfigError naming ``source``."""
    import yaml

    try:
        merge_fn()
    except (KeyError, AssertionError, ValueError, yaml.YAMLError) as e:
        message = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() quotes
        if "Non-existent" in message:
            message = _explain_bad_key(cfg, message)
        raise ConfigError(f"{source}: {message}") from e


def setup_cfg(args, plugins=()):
    from clip_biomed.dassl import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg, plugins)
    if args.dataset_config_file:
        _merge(cfg, f"dataset config file {args.dataset_config_file}",
               lambda: cfg.merge_from_file(args.dataset_config_file))
    if args.config_file:
        _merge(cfg, f"config file {args.config_file}", lambda: cfg.merge_from_file(args.config_file))
    reset_cfg(cfg, args)
    _merge(cfg, f"command-line opts {args.opts}", lambda: cfg.merge_from_list(args.opts))
    cfg.freeze()
    return cfg


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def check_eval_checkpoint(trainer, model_dir, epoch):
    """Fail loudly before --eval-only would test a model without its learned weights."""
    from clip_biomed.engine.checkpoint import find_model_file

    names = trainer.get_model_names()
    if not names:  # nothing learned (e.g. zero-shot trainers): nothing to load
        return
    if not model_dir:
        raise FileNotFoundError(f"--eval-only: the trainer has learned weights ({', '.join(names)}) but no "
                                "--model-dir was given; pass --model-dir <OUTPUT_DIR of the training run> "
                                "(and --load-epoch N for model.pth.tar-N; default: the run's final checkpoint)")
    for name in names:
        find_model_file(model_dir, name, epoch)


def main(args):
    plugins = import_plugins(plugin_names(args))
    cfg = setup_cfg(args, plugins)
    if args.eval_only and args.model_dir and not osp.isdir(args.model_dir):  # fail before building the model
        raise FileNotFoundError(f"--eval-only: model directory {args.model_dir} does not exist; pass --model-dir "
                                "<OUTPUT_DIR of the training run>")

    import torch

    from clip_biomed.dassl import ENGINE, build_trainer, collect_env_info, set_random_seed, setup_logger
    from clip_biomed.predict import write_run_info

    setup_logger(cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    print_args(args, cfg)
    print(f"Dassl engine: {ENGINE}")
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    write_run_info(trainer, cfg)  # what `python -m clip_biomed.predict` rebuilds the trainer from
    if args.eval_only:
        check_eval_checkpoint(trainer, args.model_dir, args.load_epoch)
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed >= 0 fixes python/numpy/torch RNGs (default: cfg SEED, -1 = not fixed)")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file (method)")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help=f"extra module registering trainers/datasets (repeatable; also ${PLUGINS_ENV_VAR}=m1,m2)")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="modify config options using the command-line (KEY VALUE pairs)")
    return parser


if __name__ == "__main__":
    cli_args = build_parser().parse_args()
    try:
        main(cli_args)
    except ConfigError as error:
        sys.exit(f"train.py: config error: {error}")
