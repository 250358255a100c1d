"""What every method's trainer shares: :class:`ClipTrainer`, a Dassl ``TrainerX`` on a frozen backbone.

A method (``trainers/<method>.py``) subclasses it, sets ``METHOD`` and ``CONFIG_NODE`` (its
``TRAINER.<NODE>`` keys, which hold at least ``PREC``), and implements

* ``build_model()``: call :meth:`ClipTrainer.build_backbone`, build the trainable module(s), and
  ``register_model`` them (only what trains is registered, so only that is checkpointed and put
  in train mode);
* ``forward_backward(batch)``: one training step;
* ``logits_from_features(image_features)``: logits ``[B, C]`` of L2-normalised frozen image
  features, for methods whose image tower is frozen (then evaluation reads the features, cached
  or encoded, and never the images); methods that change the image path instead set
  ``FROZEN_IMAGE_FEATURES = False`` and implement ``model_inference(images)``.

Frozen image features go through ``frozen_feature_batches``, which reads them from (and writes them
to) the on-disk feature cache (``clip_biomed/feature_cache.py``, keys ``FEATURE_CACHE.*``), so a
second evaluation of the same images by any method, seed or shot count encodes nothing.  A run
whose image features stop being those of the loaded weights (BiomedCoOp with ``IMAGE_BN train``:
BatchNorm statistics drift while training) sets ``self.FROZEN_IMAGE_FEATURES = False`` for itself,
and evaluates on images; ``uses_feature_cache()`` is the hook for finer opt-outs.

It provides: the backbone from ``MODEL.BACKBONE.NAME`` (published trainer names and the published
YAMLs' ``ViT-B/16`` spelling resolved as the published code resolves them, or refused with the fix),
precision, text encoding of frozen prompts, per-evaluation constants, evaluation with Dassl's log
lines, checkpoint loading that fails instead of evaluating untrained weights, and resume from the
last completed epoch (a small ``model-last.pth.tar`` with the RNG states, so a resumed run continues
exactly as the uninterrupted one would).

``register_method(cls, published_names(...))`` registers a trainer under its method name and under
each published ``<Method>_<Backbone>`` name.
"""
from __future__ import annotations

import os
import os.path as osp
import random
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from clip_biomed.backbones import backbone_files, build_backbone
from clip_biomed.dassl import TRAINER_REGISTRY, TrainerX, load_checkpoint
from clip_biomed.engine.checkpoint import LAST_CHECKPOINT, find_model_file, save_checkpoint
from clip_biomed.feature_cache import (FeatureCache, backbone_fields, cache_from_config, dataset_fields,
                                       draw_loader_seed, loader_fields)
from clip_biomed.image_input import check_input_size, follow_backbone
from clip_biomed.precision import Precision
from clip_biomed.progress import progress

__all__ = ["ClipTrainer", "register_method", "published_names", "resolve_backbone_name", "PAPER_BACKBONES",
           "OPENAI_SPELLINGS", "check_input_size"]

DEFAULT_BACKBONE = "BiomedCLIP"
# The four backbones of the paper; the published code has one trainer per method and backbone.
PAPER_BACKBONES = ("BiomedCLIP", "CLIP", "PubMedCLIP", "PMCCLIP")
# OpenAI CLIP's own architecture spellings, as published YAMLs write MODEL.BACKBONE.NAME.
OPENAI_SPELLINGS = ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
                    "ViT-L/14@336px")
_MODEL_LOCATIONS = ("local-dir:", "hf-hub:")


def published_names(pattern: str, backbones: Sequence[str] = PAPER_BACKBONES) -> Dict[str, str]:
    """``{"CoOp_BiomedCLIP": "BiomedCLIP", ...}`` from ``"CoOp_{}"``: the published trainer names."""
    return {pattern.format(backbone): backbone for backbone in backbones}


def register_method(cls, aliases: Dict[str, str]):
    """Register ``cls`` under its class name and each alias (a subclass fixing ``backbone_name``)."""
    cls.PUBLISHED_NAMES = tuple(aliases)
    TRAINER_REGISTRY.register(cls)
    for alias, backbone in aliases.items():
        TRAINER_REGISTRY.register(type(alias, (cls,), {
            "backbone_name": backbone, "__doc__": f"{alias}: {cls.__name__} on {backbone} (published name).",
        }))
    return cls


def open_clip_spelling(name: str) -> str:
    """open_clip's name of an OpenAI CLIP architecture: ViT-B/16 -> ViT-B-16, ViT-L/14@336px -> ViT-L-14-336."""
    return name.replace("@336px", "-336").replace("/", "-")


def resolve_backbone_name(configured: str, trainer: str, alias_backbone: Optional[str],
                          default: str = DEFAULT_BACKBONE, method: str = "",
                          published: Sequence[str] = ()) -> Tuple[str, str]:
    """The backbone a trainer uses, and a note saying why when it is not ``configured`` itself.

    * A model location (``local-dir:``, ``hf-hub:``) is always used as given.
    * A published trainer name (``CoOp_PMCCLIP``) fixes its backbone.  The OpenAI spelling every
      published YAML carries (``ViT-B/16``) is resolved as the published trainer did: ignored by
      the BiomedCLIP, PubMedCLIP and PMC-CLIP variants, loaded by the CLIP variant.  Any other name
      conflicts with the trainer's backbone and is an error.
    * A method name (``CoOp``) takes MODEL.BACKBONE.NAME (empty: BiomedCLIP).  An OpenAI spelling
      there is refused: no published method loads OpenAI CLIP that way except the ``*_CLIP``
      trainers, and silently switching a BiomedCLIP method to OpenAI CLIP would change the model.

    ``method`` and ``published`` (the method's name and its published trainer names) only word the
    errors; by default they are read off ``CoOp_<Backbone>``-style names.
    """
    if not method:  # a published name is <method>_<backbone> (LinearProbe_P2_CLIP: LinearProbe_P2)
        suffix = f"_{alias_backbone}"
        method = trainer[:-len(suffix)] if alias_backbone and trainer.endswith(suffix) else trainer
    names = ", ".join(published) or f"{method}_BiomedCLIP, {method}_CLIP, ..."
    name = configured.strip()
    if name.startswith(_MODEL_LOCATIONS):
        return name, ""
    if alias_backbone:
        if not name or name == alias_backbone:
            return alias_backbone, ""
        if name in OPENAI_SPELLINGS:
            if alias_backbone == "CLIP":
                return (open_clip_spelling(name) + ":openai",
                        f"{trainer} loads OpenAI CLIP {name} (OpenAI's weights), as the published trainer does")
            return alias_backbone, (f"MODEL.BACKBONE.NAME {name!r} (the published YAMLs' placeholder) is ignored: "
                                    f"{trainer} uses {alias_backbone}, as the published trainer does")
        raise ValueError(f"--trainer {trainer} is the published name of {method} on {alias_backbone}, but "
                         f"MODEL.BACKBONE.NAME is {name!r}. Use --trainer {method} MODEL.BACKBONE.NAME {name} to "
                         f"run it on {name}, or drop MODEL.BACKBONE.NAME")
    if not name:
        return default, ""
    if name in OPENAI_SPELLINGS:
        arch = open_clip_spelling(name)
        raise ValueError(
            f"MODEL.BACKBONE.NAME {name!r} is OpenAI CLIP's spelling, which the published YAMLs carry as a "
            f"placeholder; --trainer {trainer} would load OpenAI CLIP {name} instead of {default}. Pass "
            f"MODEL.BACKBONE.NAME {default} (what the published {method} on {default} uses), CLIP (OpenAI CLIP "
            f"ViT-B/16) or {arch}:openai (OpenAI CLIP {name}), or use a published trainer name ({names}), which "
            "resolves it as the published code did")
    return name, ""


def _rng_state() -> dict:
    """Every RNG a training epoch draws from, as tensors and plain lists (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [version, list(internal), python_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class ClipTrainer(TrainerX):
    """Base trainer of every method (see the module docstring)."""

    METHOD = ""                   # the method's name, e.g. "CoOp"
    CONFIG_NODE = ""              # TRAINER.<CONFIG_NODE> holds the method's keys (at least PREC)
    DEFAULT_BACKBONE = DEFAULT_BACKBONE
    FROZEN_IMAGE_FEATURES = True  # evaluation needs only frozen image features (logits_from_features)
    PUBLISHED_NAMES: Tuple[str, ...] = ()  # set by register_method
    backbone_name: Optional[str] = None  # set on the published-name aliases

    # -- configuration ---------------------------------------------------------------------------
    @property
    def opts(self):
        """This method's config node ``cfg.TRAINER.<CONFIG_NODE>``."""
        return self.cfg.TRAINER[self.CONFIG_NODE]

    def check_cfg(self, cfg):
        Precision.check(cfg.TRAINER[self.CONFIG_NODE].PREC)

    # -- the frozen backbone -----------------------------------------------------------------------
    def _backbone_source(self):
        """(name, files record) of the configured backbone, resolved once (its files, not the model)."""
        if getattr(self, "_backbone_resolved", None) is None:
            name, note = resolve_backbone_name(self.cfg.MODEL.BACKBONE.NAME, type(self).__name__,
                                               self.backbone_name, self.DEFAULT_BACKBONE, self.METHOD,
                                               self.PUBLISHED_NAMES)
            if note:
                print(note)
            self._backbone_resolved = (name, backbone_files(name))
        return self._backbone_resolved

    def build_data_loader(self):
        """Dassl's data loaders, with INPUT following the backbone's preprocessing (``image_input.py``)."""
        name, files = self._backbone_source()
        for line in follow_backbone(self.cfg, files.preprocess, name):
            print(line)
        super().build_data_loader()

    def build_backbone(self):
        """Build ``self.backbone`` (frozen, eval mode) and ``self.precision`` from the config."""
        name, files = self._backbone_source()
        print(f"Loading backbone: {name}")
        self.backbone = build_backbone(name, device=self.device, precision=self.opts.PREC, files=files)
        self._backbone_resolved = (name, None)  # drop the record: it may hold a state dict read for its facts
        self.backbone_label = name
        self.precision = Precision(self.opts.PREC, self.device)
        check_input_size(self.cfg, self.backbone.preprocess, name)
        self._eval_constants: Dict[str, object] = {}
        return self.backbone

    def run_metadata(self) -> dict:
        """What a checkpoint records about the run that produced it."""
        return {
            "trainer": self.METHOD or type(self).__name__,
            "backbone": self.backbone_label,
            "dataset": self.cfg.DATASET.NAME,
            "subsample_classes": self.cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"),
        }

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised features ``[N, D]`` of frozen sentences, with the text tower in eval mode."""
        tower = self.backbone.text_tower
        was_training = tower.training
        tower.eval()
        chunks = []
        with self.precision.autocast():
            for start in range(0, len(texts), batch_size):
                ids = self.backbone.tokenize(list(texts[start:start + batch_size]))
                chunks.append(self.backbone.encode_text(ids).float())
        tower.train(was_training)
        return F.normalize(torch.cat(chunks), dim=-1)

    def class_text_features(self, template: str = "a photo of a {}.") -> torch.Tensor:
        """Normalised features ``[C, D]`` of ``template`` filled with each class name (``_`` read as a
        space), the classifier of zero-shot CLIP."""
        names = [name.replace("_", " ") for name in self.dm.dataset.classnames]
        return self.encode_texts([template.format(name) for name in names])

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised frozen image features ``[B, D]`` (float32)."""
        with self.precision.autocast():
            return F.normalize(self.backbone.encode_image(images).float(), dim=-1)

    def run_constant(self, key: str, compute: Callable[[], object]):
        """A frozen value computed once per run, on first use (e.g. the zero-shot classifier or a
        teacher's text features: what only training needs is never computed by an evaluation)."""
        constants = self.__dict__.setdefault("_run_constants", {})
        if key not in constants:
            constants[key] = compute()
        return constants[key]

    # -- evaluation --------------------------------------------------------------------------------
    def eval_constant(self, key: str, compute: Callable[[], object]):
        """A value computed once per evaluation (e.g. the text features of the learned prompts), under
        the precision's autocast; forgotten when the model mode changes or weights are loaded."""
        if key not in self._eval_constants:
            with self.precision.autocast():
                self._eval_constants[key] = compute()
        return self._eval_constants[key]

    def set_model_mode(self, mode="train", names=None):
        super().set_model_mode(mode, names)
        self._eval_constants = {}

    def logits_from_features(self, image_features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement logits_from_features(image_features)")

    @torch.no_grad()
    def model_inference(self, images):
        return self.logits_from_features(self.image_features(images))

    def _evaluation_loader(self, split):
        if split is None:
            split = self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            return "val", self.val_loader
        return "test", self.test_loader

    # -- the frozen-feature cache (clip_biomed/feature_cache.py) -----------------------------------
    @property
    def feature_cache(self) -> Optional[FeatureCache]:
        """The cache FEATURE_CACHE.* configures (None when disabled)."""
        if "_feature_cache" not in self.__dict__:
            self._feature_cache = cache_from_config(self.cfg)
        return self._feature_cache

    def uses_feature_cache(self) -> bool:
        """Hook: may frozen image features be read from and written to the cache now?  False for
        methods that change the image path, when FEATURE_CACHE.ENABLED is False, and whenever a
        subclass says so (its image features are not those of the loaded weights)."""
        return self.FROZEN_IMAGE_FEATURES and self.feature_cache is not None

    def feature_cache_fields(self, split: str, loader, **extra) -> Optional[dict]:
        """The key of ``loader``'s features under this backbone (None: the cache cannot describe the loader)."""
        images = loader_fields(loader)
        if images is None:
            print(f"Feature cache: not used for the {split} images (the loader is not a sequential Dassl loader)")
            return None
        return {"split": split, **images, **backbone_fields(self.backbone, self.opts.PREC, self.device),
                **dataset_fields(self.cfg, self.dm.dataset), **extra}

    def encoded_feature_batches(self, split: str, loader) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(normalised image features, labels) of ``loader``'s images, encoded one batch at a time."""
        for batch in progress(loader, desc=f"Encoding the {split} images", unit="batch"):
            images, labels = self.parse_batch_test(batch)
            yield self.image_features(images), labels

    def frozen_feature_batches(self, split: str, loader) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(normalised image features, labels) of ``loader``'s images, one test batch at a time: from
        the feature cache when it holds them, else encoded (and stored there).  Either way the torch
        RNG ends in the same state (a cache hit draws what iterating the loader draws)."""
        fields = self.feature_cache_fields(split, loader) if self.uses_feature_cache() else None
        if fields is None:
            yield from self.encoded_feature_batches(split, loader)
            return
        yield from self.feature_cache.batches(
            fields, lambda: self.encoded_feature_batches(split, loader), loader.batch_size, self.device,
            on_hit=lambda: draw_loader_seed(loader), what=f"{split} images")

    @torch.no_grad()
    def test(self, split=None):
        """Dassl's ``test`` (same log lines and return value); frozen-feature methods evaluate on
        features rather than images."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split, loader = self._evaluation_loader(split)
        self.evaluator.split = split  # names the metrics file (clip_biomed.evaluation)
        print(f"Evaluate on the *{split}* set")
        if self.FROZEN_IMAGE_FEATURES:
            for features, labels in self.frozen_feature_batches(split, loader):
                self.evaluator.process(self.logits_from_features(features), labels)
        else:
            for batch in progress(loader, desc=f"Evaluating on {split}", unit="batch"):
                images, labels = self.parse_batch_test(batch)
                self.evaluator.process(self.model_inference(images), labels)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        return list(results.values())[0]

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # -- checkpoints -------------------------------------------------------------------------------
    def trainable_parameters(self, name: Optional[str] = None) -> List[Tuple[str, torch.nn.Parameter]]:
        names = [name] if name else self.get_model_names()
        return [(f"{n}.{p_name}", p) for n in names for p_name, p in self._models[n].named_parameters()
                if p.requires_grad]

    def print_trainable_parameters(self) -> None:
        params = self.trainable_parameters()
        total = sum(p.numel() for _, p in params)
        shown = ", ".join(n for n, _ in params[:6]) + (" ..." if len(params) > 6 else "")
        print(f"Trainable parameters: {total:,} ({shown or 'none'})")

    def loadable_state_dict(self, name: str, state_dict: dict) -> dict:
        """Hook: turn a checkpoint's state dict into what ``self._models[name]`` loads (e.g. the
        context out of a published full-model checkpoint)."""
        return state_dict

    def load_model(self, directory, epoch=None):
        """Load every registered model from a run folder (``epoch`` None: its final checkpoint).

        Unlike Dassl, a missing file, or a file that lacks a trained tensor, is an error: an
        evaluation never silently runs untrained weights.
        """
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given (ignore this if it's done on purpose)")
            return
        for name in self.get_model_names():
            path = find_model_file(directory, name, epoch)
            checkpoint = load_checkpoint(path)
            state_dict = self.loadable_state_dict(name, checkpoint["state_dict"])
            print(f'Loading weights to {name} from "{path}" (epoch = {checkpoint["epoch"]})')
            model = self._models[name]
            missing = model.load_state_dict(state_dict, strict=False).missing_keys
            untrained = [key for key, p in model.named_parameters() if p.requires_grad and key in missing]
            if untrained:
                raise KeyError(f"{path} holds no value for the trained parameter(s) {', '.join(untrained)} of "
                               f"{name}: was it written by another method ({checkpoint['state_dict'].keys()})?")
            trained_on = getattr(model, "loaded_metadata", {}).get("backbone")
            if trained_on and trained_on != self.backbone_label:
                print(f"Warning: these weights were trained with backbone {trained_on}, now used with "
                      f"{self.backbone_label}")
        self._eval_constants = {}

    def after_epoch(self):
        super().after_epoch()
        last_epoch = (self.epoch + 1) == self.max_epoch
        for name in self.get_model_names():
            folder = osp.join(self.output_dir, name)
            if last_epoch:
                if osp.isfile(osp.join(folder, LAST_CHECKPOINT)):
                    os.remove(osp.join(folder, LAST_CHECKPOINT))
                continue
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint({
                "state_dict": self._models[name].state_dict(),
                "epoch": self.epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": None,
                "best_result": None if not np.isfinite(self.best_result) else float(self.best_result),
                "rng_state": _rng_state(),
            }, folder, model_name=LAST_CHECKPOINT, quiet=True)

    def resume_model_if_exist(self, directory):
        start_epoch = super().resume_model_if_exist(directory)
        names = self.get_model_names()
        if start_epoch and names:
            last = osp.join(directory, names[0], LAST_CHECKPOINT)
            pointer = osp.join(directory, names[0], "checkpoint")
            if osp.isfile(last) and osp.isfile(pointer) and open(pointer).read().strip() == LAST_CHECKPOINT:
                state = load_checkpoint(last)
                _set_rng_state(state["rng_state"])
                if state.get("best_result") is not None:
                    self.best_result = state["best_result"]
                print(f"Restored the random number generators of epoch {start_epoch} (the run continues as if "
                      "uninterrupted)")
        return start_epoch

