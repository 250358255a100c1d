"""CoOp-compatible entry point: train or evaluate one trainer on one dataset.

Config merge order: engine defaults -> extend_cfg (DATASET.SUBSAMPLE_CLASSES, INPUT.FOLLOW_BACKBONE and
every trainer's keys) -> --dataset-config-file -> --config-file -> flags -> trailing KEY VALUE opts ->
freeze.  The INPUT preprocessing keys then follow the backbone unless given in the opts
(clip_biomed/image_input.py).

Differences from CoOp's train.py (docs/engine.md):
- ``--seed 0`` seeds (CoOp ignores it because 0 is falsy); any seed >= 0 fixes the RNGs.
- ``--eval-only`` fails with FileNotFoundError if the trainer has learned weights and --model-dir
  is missing, absent, or lacks the requested checkpoint (CoOp silently tests an untrained model).
- A bad config key or value names the file (or the opts) it came from.
- TEST.EVALUATOR defaults to ClinicalClassification: Dassl's result block, then balanced accuracy,
  AUROC, calibration and per-class sensitivity/specificity, saved to OUTPUT_DIR/metrics_<split>.json
  (docs/metrics.md); ``TEST.EVALUATOR Classification`` prints Dassl's block alone.
- Every run folder gets ``run_info.json`` (the config and the class names in label order), from which
  ``python -m clip_biomed.predict`` rebuilds the trainer without the dataset.
- ``--plugin MODULE`` (repeatable) / ``CLIP_BIOMED_PLUGINS=mod1,mod2`` import extra modules that
  register trainers or datasets (e.g. in tests); a module's ``extend_cfg(cfg)`` is called if present.
- ``import train`` registers the project's trainers and datasets (as importing CoOp's train.py does);
  run as a script, it imports them after parsing the flags, so ``--help`` stays instant.
- Flags placed after the trailing KEY VALUE options are reported as such (argparse would pass them on
  as options); DATALOADER.NUM_WORKERS is capped to the CPUs this process may use.
- Without --output-dir (or OUTPUT_DIR in a config), a run started inside the repository stops instead
  of writing ./output into the repository.
- An error ends the run with one line on stderr (the traceback goes to log.txt, and to the terminal
  with ``CLIP_BIOMED_DEBUG=1``); the config is printed once the trainer is built, so an error in
  building the data or the model comes right after the first lines, not after the config dump.
"""
import argparse
import importlib
import os
import os.path as osp
import sys
import traceback

REPO_ROOT = osp.dirname(osp.abspath(__file__))
PLUGINS_ENV_VAR = "CLIP_BIOMED_PLUGINS"
DEBUG_ENV_VAR = "CLIP_BIOMED_DEBUG"
DEFAULT_OUTPUT_DIR = "./output"  # the engines' default OUTPUT_DIR


class ConfigError(ValueError):
    """A config file, flag or opts list that does not fit the config tree."""


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
    """Add the project's config keys: DATASET.SUBSAMPLE_CLASSES, the default evaluator, INPUT.FOLLOW_BACKBONE,
    FEATURE_CACHE.{ENABLED,DIR} (read by every trainer), then each plugin's own keys
    (``trainers.extend_cfg`` adds every trainer's TRAINER.<NAME> node)."""
    from clip_biomed import image_input
    from clip_biomed.evaluation import ClinicalClassification  # registers it with the engine
    from clip_biomed.feature_cache import add_config as add_feature_cache_config

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    # Dassl's result block plus the clinical metrics (docs/metrics.md); "Classification": Dassl's block only.
    cfg.TEST.EVALUATOR = ClinicalClassification.__name__
    image_input.add_config(cfg)  # INPUT.FOLLOW_BACKBONE, INPUT.USER_KEYS
    add_feature_cache_config(cfg)
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


def check_opts(opts, parser=None):
    """Flags after the first KEY VALUE pair are not flags for argparse: say where they belong."""
    known = {option for action in (parser or build_parser())._actions for option in action.option_strings}
    misplaced = [token for token in opts if token.startswith("--")]
    if not misplaced:
        return
    flags = [token for token in misplaced if token.split("=")[0] in known]
    unknown = [token for token in misplaced if token not in flags]
    message = []
    if flags:
        message.append(f"the flag(s) {' '.join(flags)} come after the KEY VALUE options, where they would be read "
                       f"as config keys: put every flag before the first option ({opts[0]})")
    if unknown:
        message.append(f"{' '.join(unknown)} is not a train.py flag (python train.py --help lists them)")
    raise ConfigError("command-line opts: " + "; ".join(message))


def available_cpus():
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cap_workers(cfg):
    """More data-loader workers than CPUs only adds processes (PyTorch warns on every run)."""
    cpus = available_cpus()
    if cfg.DATALOADER.NUM_WORKERS > cpus:
        print(f"DATALOADER.NUM_WORKERS {cfg.DATALOADER.NUM_WORKERS} capped to {cpus}, the CPUs available here "
              "(the random augmentations of a run depend on the worker count)")
        cfg.DATALOADER.NUM_WORKERS = cpus


def check_output_dir(cfg, args):
    """Nothing is written into the repository unless asked: the implicit ./output must lie outside it."""
    if args.output_dir or cfg.OUTPUT_DIR != DEFAULT_OUTPUT_DIR:
        return
    output = osp.realpath(cfg.OUTPUT_DIR)
    if osp.commonpath([output, osp.realpath(REPO_ROOT)]) == osp.realpath(REPO_ROOT):
        raise ConfigError(f"no --output-dir given, and the default {DEFAULT_OUTPUT_DIR} is inside the repository "
                          f"({output}): pass --output-dir <folder> (e.g. outside {REPO_ROOT}), or run from "
                          "your own working folder")


def setup_cfg(args, plugins=()):
    from clip_biomed import image_input
    from clip_biomed.dassl import get_cfg_default

    cfg = get_cfg_default()
    extend_cfg(cfg, plugins)
    if args.dataset_config_file:
        _merge(cfg, f"dataset config file {args.dataset_config_file}",
               lambda: cfg.merge_from_file(args.dataset_config_file))
    if args.config_file:
        _merge(cfg, f"config file {args.config_file}", lambda: cfg.merge_from_file(args.config_file))
    reset_cfg(cfg, args)
    check_opts(args.opts)
    _merge(cfg, f"command-line opts {args.opts}", lambda: cfg.merge_from_list(args.opts))
    image_input.mark_user_keys(cfg, args.opts)  # these INPUT keys win over the backbone's values
    cap_workers(cfg)
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
    check_output_dir(cfg, args)
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

    trainer = build_trainer(cfg)
    print_args(args, cfg)  # neither prints nor collect_env_info draws a random number
    print(f"Dassl engine: {ENGINE}")
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")
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


def report_error(error):
    """One line for the terminal; the traceback into the run's log.txt (when one is open)."""
    log_file = getattr(sys.stdout, "file", None)
    where = ""
    if log_file is not None and not log_file.closed:
        log_file.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        log_file.flush()
        where = f"full traceback in {log_file.name}; "
    kind = "config error" if isinstance(error, ConfigError) else f"error: {type(error).__name__}"
    return f"train.py: {kind}: {error}\n({where}{DEBUG_ENV_VAR}=1 prints it here)"


def run_cli(argv=None):
    """The command line: errors end the run with one clear message (exit status 1)."""
    cli_args = build_parser().parse_args(argv)
    try:
        main(cli_args)
    except Exception as error:
        if os.environ.get(DEBUG_ENV_VAR, "") not in ("", "0"):
            raise
        sys.exit(report_error(error))


if __name__ == "__main__":
    run_cli()
else:
    PROJECT_PLUGINS = import_plugins([])  # `import train` registers the trainers and datasets, as in CoOp
