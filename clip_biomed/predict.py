"""``python -m clip_biomed.predict RUN IMAGES...``: the top-k classes of images, from a trained run.

    python -m clip_biomed.predict output/btmri/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1 scan.png
    python -m clip_biomed.predict RUN images/ --topk 2 --csv predictions.csv
    python -m clip_biomed.predict checkpoints/few_shot/btmri/.../seed1/prompt_learner/model.pth.tar-100 scan.png \\
        --backbone local-dir:biomedclip-offline

RUN is a run folder written by ``train.py`` (training or evaluation-only, e.g. zero-shot), or a
checkpoint file in one (``<run>/<model>/model.pth.tar-<epoch>``, that epoch is used; otherwise
the run's final checkpoint).  The trainer is rebuilt from the run's ``run_info.json`` (the
config and the class names in label order, which ``train.py`` writes into every run folder), so
neither the dataset nor the machine it was trained on is needed.  A released checkpoint without one
(the authors' ``few_shot/<ds>/shots_K/<Trainer>/.../seed<S>`` and ``base2new/train_base/...``) is
rebuilt from the repository's configs for that dataset and trainer and the dataset's published class
names.  ``--backbone`` replaces MODEL.BACKBONE.NAME (e.g. a local copy on an offline machine).

Images (files, or folders searched recursively) go through the run's test transform; the
probabilities are the softmax of the method's logits.  ``predict(...)`` is the same in Python.
Like train.py, this needs the registered trainers: they are imported through train.py's plugin
loader (CLIP_BIOMED_PLUGINS adds modules), from the repository root.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import os.path as osp
import re
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RUN_INFO = "run_info.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
_EPOCH_FILE = re.compile(r"model\.pth\.tar-(\d+)$")


def write_run_info(trainer, cfg) -> str:
    """Write ``<OUTPUT_DIR>/run_info.json``: the trainer name, the class names in label order, the full
    config and the size of the training data (some methods size their state by it, e.g. Tip-Adapter's
    cache, or their schedule by it): what :class:`Predictor` rebuilds the trainer from."""
    path = osp.join(cfg.OUTPUT_DIR, RUN_INFO)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    loader = trainer.train_loader_x
    data = {"train_size": len(trainer.dm.dataset.train_x), "train_batches": len(loader) if loader is not None else 0}
    info = {"trainer": cfg.TRAINER.NAME, "classnames": list(trainer.dm.dataset.classnames), "data": data,
            "config": cfg}
    with open(f"{path}.partial", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(f"{path}.partial", path)
    return path


@dataclass(frozen=True)
class Prediction:
    path: str
    top: Tuple[Tuple[str, float], ...]  # (class name, probability in [0, 1]), most likely first


class _ClassNamesOnly:
    """What a trainer reads of its DataManager while it is built, without any data: the class names,
    and training data and loader of the recorded sizes whose items are never read."""

    def __init__(self, classnames: Sequence[str], train_size: int = 0, train_batches: int = 0):
        lab2cname = dict(enumerate(classnames))
        self.dataset = SimpleNamespace(classnames=list(classnames), lab2cname=lab2cname, num_classes=len(classnames),
                                       train_x=[None] * train_size)
        self.num_classes, self.lab2cname, self.num_source_domains = len(classnames), lab2cname, 0
        self.train_loader_x = range(train_batches) if train_batches else None
        self.train_loader_u = self.val_loader = self.test_loader = None


def _without_data(trainer_class, classnames, data):
    """``trainer_class`` with a data manager holding only ``classnames`` and the recorded ``data``
    sizes: a method that needs its training data itself to be built fails there, with its own error."""
    def build_data_loader(self):
        dm = _ClassNamesOnly(classnames, data.get("train_size", 0), data.get("train_batches", 0))
        self.dm = dm
        self.train_loader_x, self.train_loader_u, self.val_loader, self.test_loader = dm.train_loader_x, None, None, None
        self.num_classes, self.num_source_domains, self.lab2cname = dm.num_classes, 0, dm.lab2cname

    return type(trainer_class.__name__, (trainer_class,), {"build_data_loader": build_data_loader})


def _plugins():
    if sys.path[:1] != [REPO_ROOT]:
        sys.path.insert(0, REPO_ROOT)
    import train

    return train, train.import_plugins(train.plugin_names(SimpleNamespace(plugin=[])))


def locate(source: str) -> Tuple[str, Optional[int]]:
    """(run folder, epoch or None) of a run folder or of a checkpoint file inside one."""
    if osp.isdir(source):
        return source, None
    if osp.isfile(source):
        match = _EPOCH_FILE.search(osp.basename(source))
        return osp.dirname(osp.dirname(osp.abspath(source))), int(match.group(1)) if match else None
    raise FileNotFoundError(f"{source} is neither a run folder nor a checkpoint file")


def _released_layout(run_dir: str) -> Tuple[str, str, str]:
    """(dataset, trainer, protocol) of a run folder in the published layout, from its path."""
    parts = osp.abspath(run_dir).split(os.sep)
    shots = [i for i, p in enumerate(parts) if re.fullmatch(r"shots_\d+", p)]
    if not shots or shots[-1] + 1 >= len(parts):
        raise FileNotFoundError(
            f"{run_dir} has no {RUN_INFO} (train.py writes one into every run folder) and its path is not in the "
            "published layout <dataset>/shots_<K>/<Trainer>/.../seed<S>: give a run folder written by train.py")
    i = shots[-1]
    return parts[i - 1], parts[i + 1], "base_to_novel" if "train_base" in parts[:i] else "few_shot"


def _assign(cfg, values: dict) -> None:
    """Set a run's recorded config values into ``cfg`` as they are.  (yacs' merge would parse string
    values again, and a value such as BiomedAP's template "{}" would come back as a dict.)"""
    from yacs.config import CfgNode

    for key, value in values.items():
        current = cfg.get(key)
        if isinstance(value, dict):
            if not isinstance(current, CfgNode):
                cfg[key] = current = CfgNode()
            _assign(current, value)
        else:  # JSON has no tuples: keep the default's tuple type (e.g. INPUT.SIZE)
            cfg[key] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value


def _config_and_classnames(run_dir: str, train, plugins, backbone: Optional[str], cpu: bool, opts: Sequence[str]):
    from clip_biomed.dassl import get_cfg_default

    cfg = get_cfg_default()
    train.extend_cfg(cfg, plugins)
    info_path = osp.join(run_dir, RUN_INFO)
    if osp.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
        _assign(cfg, info["config"])
        classnames, data = info["classnames"], info.get("data", {})
    else:
        from clip_biomed.data_tools.catalog import published_dataset
        from clip_biomed.data_tools.splits import base_new_labels

        dataset, trainer, protocol = _released_layout(run_dir)
        method = trainer.split("_")[0]
        for path in (osp.join(REPO_ROOT, "configs", "datasets", f"{dataset}.yaml"),
                     osp.join(REPO_ROOT, "configs", "trainers", method, protocol, f"{dataset}.yaml")):
            if not osp.isfile(path):
                raise FileNotFoundError(f"{run_dir} has no {RUN_INFO}, and the config {path} its path points to "
                                        "does not exist")
            cfg.merge_from_file(path)
        cfg.TRAINER.NAME = trainer
        if protocol == "base_to_novel":
            cfg.DATASET.SUBSAMPLE_CLASSES = "base"
        names = published_dataset(cfg.DATASET.NAME).classnames
        kept = base_new_labels(range(len(names)), cfg.DATASET.SUBSAMPLE_CLASSES)
        classnames = [names[label] for label in sorted(kept, key=kept.get)]
        data = {}
    if backbone:
        cfg.MODEL.BACKBONE.NAME = backbone
    cfg.merge_from_list(list(opts))
    if cpu:
        cfg.USE_CUDA = False
    cfg.OUTPUT_DIR = run_dir
    cfg.freeze()
    return cfg, classnames, data


class Predictor:
    """A trained run's trainer, rebuilt for prediction (see the module docstring)."""

    def __init__(self, source: str, backbone: Optional[str] = None, epoch: Optional[int] = None, cpu: bool = False,
                 opts: Sequence[str] = ()):
        from clip_biomed.dassl import TRAINER_REGISTRY, build_transform

        run_dir, file_epoch = locate(source)
        train, plugins = _plugins()
        cfg, self.classnames, data = _config_and_classnames(run_dir, train, plugins, backbone, cpu, opts)
        names = TRAINER_REGISTRY.registered_names()
        if cfg.TRAINER.NAME not in names:
            raise KeyError(f"The run's trainer {cfg.TRAINER.NAME!r} is not registered; registered: "
                           f"{', '.join(sorted(names))} (CLIP_BIOMED_PLUGINS=module adds others)")
        self.trainer = _without_data(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), self.classnames, data)(cfg)
        if self.trainer.get_model_names():  # methods with a trained state; zero-shot has none
            self.trainer.load_model(run_dir, epoch=epoch if epoch is not None else file_epoch)
        self.trainer.set_model_mode("eval")
        self.transform = build_transform(cfg, is_train=False)
        self.cfg = cfg

    def probabilities(self, paths: Sequence[str], batch_size: int = 32):
        """Softmax of the logits ``[N, C]`` of the images at ``paths``."""
        import torch

        from clip_biomed.dassl import read_image
        from clip_biomed.progress import progress

        chunks = []
        batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        with torch.no_grad():
            for batch in progress(batches, desc="Predicting", unit="batch"):
                images = torch.stack([self.transform(read_image(p)) for p in batch]).to(self.trainer.device)
                chunks.append(self.trainer.model_inference(images).float().softmax(dim=-1).cpu())
        return torch.cat(chunks)

    def predict(self, images: Sequence[str], topk: int = 3, batch_size: int = 32) -> List[Prediction]:
        paths = image_files(images)
        probs = self.probabilities(paths, batch_size)
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
        return [Prediction(path, tuple((self.classnames[i], float(v)) for v, i in zip(vs.tolist(), ids.tolist())))
                for path, vs, ids in zip(paths, values, indices)]


def image_files(sources: Sequence[str]) -> List[str]:
    """The image files among ``sources`` (files, and folders searched recursively), in order."""
    found = []
    for source in sources:
        if osp.isdir(source):
            inside = sorted(osp.join(d, f) for d, _, files in os.walk(source) for f in files
                            if f.lower().endswith(IMAGE_SUFFIXES))
            if not inside:
                raise FileNotFoundError(f"No image ({', '.join(IMAGE_SUFFIXES)}) in the folder {source}")
            found += inside
        elif osp.isfile(source):
            found.append(source)
        else:
            raise FileNotFoundError(f"No image file or folder at {source}")
    return found


def predict(run: str, images: Sequence[str], topk: int = 3, backbone: Optional[str] = None,
            epoch: Optional[int] = None, cpu: bool = False, opts: Sequence[str] = ()) -> List[Prediction]:
    """Top-``topk`` (class, probability) of each image for the run (see the module docstring)."""
    return Predictor(run, backbone, epoch, cpu, opts).predict(images, topk)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clip_biomed.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", metavar="RUN", help="a run folder of train.py, or a checkpoint file in one")
    parser.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders of images")
    parser.add_argument("--topk", type=int, default=3, help="classes per image (default %(default)s)")
    parser.add_argument("--csv", metavar="FILE", help="write path,rank,class,probability rows to FILE")
    parser.add_argument("--backbone", help="MODEL.BACKBONE.NAME to use instead of the run's (e.g. local-dir:DIR)")
    parser.add_argument("--load-epoch", type=int, help="the checkpoint of this epoch (default: the run's final one)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="KEY VALUE config options over the run's (must come last), e.g. TRAINER.COOP.PREC fp16")
    args = parser.parse_args(argv)
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    try:
        predictions = predict(args.run, args.images, args.topk, args.backbone, args.load_epoch, args.cpu, args.opts)
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"clip_biomed.predict: error: {error}", file=sys.stderr)
        return 1
    for prediction in predictions:
        print(f"{prediction.path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in prediction.top))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "rank", "class", "probability"])
            for prediction in predictions:
                writer.writerows([prediction.path, rank, name, f"{p:.6f}"]
                                 for rank, (name, p) in enumerate(prediction.top, 1))
        print(f"Wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
