"""What CLIP-SVD and CLIP-LoRA share: fine-tuning re-parameterised linear layers inside both towers.

A method on :class:`TowerTuningTrainer` says only how one frozen Linear is re-parameterised
(``wrap_linear``: singular values for CLIP-SVD, a low-rank update for CLIP-LoRA).  The trainer

* wraps the Linear layers of the roles ``PARAMS`` (``q k v o fc1 fc2``) in the blocks ``LAYERS``
  (``all``, ``top_middle``, ``4-11``, ...) of the towers ``TOWERS`` through
  ``clip_biomed.backbones.adapt.wrap_linears``, so it works on every backbone with tower layouts;
* classifies with a hand-written ``TEMPLATE`` (``a photo of a {}.``): the text of every class is
  re-encoded through the adapted text tower at every iteration, the images through the adapted
  image tower, and the loss is cross-entropy on s * f t^T (s: the backbone's logit scale, frozen,
  or ``LOGIT_SCALE`` when > 0);
* optimises with the engine's ``build_optimizer`` (the YAMLs say AdamW) and a cosine schedule
  stepped **every iteration** from OPTIM.LR down to ``MIN_LR`` over the whole run
  (``OPTIM.MAX_EPOCH`` epochs of the loader's batches), as the published codes do; no warm-up;
* registers the wrappers as one model, ``adapters``: only what the wrappers add (singular values,
  low-rank factors) trains and goes into checkpoints, with the run's metadata.

Evaluation runs the adapted towers on the test images (``FROZEN_IMAGE_FEATURES = False``); the text
features are computed once per evaluation.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_biomed.backbones.adapt import select_blocks, wrap_linears
from clip_biomed.backbones.layouts import ROLES, UnsupportedTowerError
from clip_biomed.dassl import build_optimizer, compute_accuracy
from clip_biomed.method import ClipTrainer

TOWERS = ("image", "text")


def add_tower_tuning_keys(node: CN, params: Sequence[str]) -> None:
    """The keys every method on :class:`TowerTuningTrainer` has (``params``: its default roles)."""
    node.TEMPLATE = "a photo of a {}."
    node.TOWERS = list(TOWERS)
    node.LAYERS = "all"
    node.PARAMS = list(params)
    node.MIN_LR = 1e-6  # the cosine schedule's final LR
    node.LOGIT_SCALE = 0.0  # 0: the backbone's own (frozen) logit scale
    node.PREC = "fp32"
    # The published codes train with model.train(): the text tower's dropout (BERT) is on.
    node.TEXT_DROPOUT = True


class TowerAdapters(nn.ModuleDict):
    """The wrappers of every adapted layer, ``{tower: {block: {role: wrapper}}}``; its state dict
    holds only the trained tensors (e.g. ``image.3.q.sigma``) and the run's metadata."""

    def __init__(self, wrappers: Dict[str, nn.Module], metadata: dict):
        super().__init__(wrappers)
        self.metadata = metadata

    def get_extra_state(self):
        return dict(self.metadata)

    def set_extra_state(self, state):
        self.loaded_metadata = dict(state)


class TowerTuningTrainer(ClipTrainer):
    """Base trainer of methods that re-parameterise linear layers inside the towers (see module doc)."""

    FROZEN_IMAGE_FEATURES = False

    def wrap_linear(self, linear: nn.Linear) -> nn.Module:
        """The method's re-parameterisation of one frozen Linear (equal to it at initialisation)."""
        raise NotImplementedError(f"{type(self).__name__} must implement wrap_linear(linear)")

    def run_epochs(self) -> int:
        """How many epochs the run trains (methods with an iteration budget override this)."""
        return self.cfg.OPTIM.MAX_EPOCH

    def schedule_length(self) -> int:
        """T_max of the per-iteration cosine: every iteration of the run."""
        return self.max_epoch * len(self.train_loader_x)

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        opts, optim = cfg.TRAINER[self.CONFIG_NODE], cfg.OPTIM
        if optim.LR_SCHEDULER != "cosine" or optim.WARMUP_EPOCH > 0:
            raise ValueError(f"{self.METHOD} uses its own per-iteration cosine schedule without warm-up: set "
                             f"OPTIM.LR_SCHEDULER cosine and OPTIM.WARMUP_EPOCH 0 (got {optim.LR_SCHEDULER!r}, "
                             f"{optim.WARMUP_EPOCH})")
        for key, values, valid in (("TOWERS", opts.TOWERS, TOWERS), ("PARAMS", opts.PARAMS, ROLES)):
            unknown = [value for value in values if value not in valid]
            if unknown or not values:
                raise ValueError(f"TRAINER.{self.CONFIG_NODE}.{key} {list(values)}: choose one or more of "
                                 f"{', '.join(valid)}")

    def build_model(self):
        cfg, opts = self.cfg, self.opts
        self.build_backbone()
        self.max_epoch = self.run_epochs()

        print(f"Re-parameterising the {', '.join(opts.PARAMS)} layers of blocks {opts.LAYERS} of the "
              f"{' and '.join(opts.TOWERS)} tower(s)")
        wrappers = {}
        for tower in opts.TOWERS:
            try:
                layout = self.backbone.tower_layout(tower)
            except UnsupportedTowerError as error:
                others = [other for other in opts.TOWERS if other != tower] or [t for t in TOWERS if t != tower]
                raise UnsupportedTowerError(f"{error} To adapt only the {others[0]} tower, pass "
                                            f"TRAINER.{self.CONFIG_NODE}.TOWERS \"['{others[0]}']\"") from None
            blocks = select_blocks(opts.LAYERS, len(layout.blocks))
            wrappers[tower] = wrap_linears(self.backbone, tower, opts.PARAMS, blocks, self.wrap_linear)
        metadata = {**self.run_metadata(), "towers": list(opts.TOWERS), "layers": opts.LAYERS,
                    "params": list(opts.PARAMS), "template": opts.TEMPLATE}
        self.adapters = TowerAdapters(wrappers, metadata)

        names = [name.replace("_", " ") for name in self.dm.dataset.classnames]
        self.class_token_ids = self.backbone.tokenize([opts.TEMPLATE.format(name) for name in names])
        optim = build_optimizer(self.adapters, cfg.OPTIM)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=self.schedule_length(), eta_min=opts.MIN_LR)
        self.register_model("adapters", self.adapters, optim, sched)
        self.print_trainable_parameters()

    # -- forward passes ------------------------------------------------------------------------

    @property
    def scale(self) -> torch.Tensor:
        fixed = self.opts.LOGIT_SCALE
        return self.backbone.logit_scale if fixed <= 0 else torch.tensor(float(fixed), device=self.device)

    def set_model_mode(self, mode="train", names=None):
        # the text tower first: the adapters' own mode (e.g. LoRA dropout) is then set by super()
        self.backbone.text_tower.train(mode == "train" and self.opts.TEXT_DROPOUT)
        super().set_model_mode(mode, names)

    def text_features(self) -> torch.Tensor:
        return F.normalize(self.backbone.encode_text(self.class_token_ids).float(), dim=-1)

    def tuned_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone.encode_image(images).float(), dim=-1)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        with self.precision.autocast():
            logits = self.scale * self.tuned_image_features(image) @ self.text_features().t()
            loss = F.cross_entropy(logits, label)
        self.precision.backward_and_step(loss, self._optims["adapters"])
        self._scheds["adapters"].step()  # per iteration
        return {"loss": loss.item(), "acc": compute_accuracy(logits, label)[0].item()}

    @torch.no_grad()
    def model_inference(self, images):
        text_features = self.eval_constant("text_features", self.text_features)
        with self.precision.autocast():
            image_features = self.tuned_image_features(images)
        return self.scale * image_features @ text_features.t()

    # -- checkpoints -----------------------------------------------------------------------------

    def loadable_state_dict(self, name, state_dict):
        unexpected = sorted(set(state_dict) - set(self.adapters.state_dict()))
        if unexpected:
            raise KeyError(f"the checkpoint holds layers this run does not adapt ({', '.join(unexpected[:4])} ...): "
                           f"was it trained with other TRAINER.{self.CONFIG_NODE}.TOWERS/LAYERS/PARAMS than "
                           f"{list(self.opts.TOWERS)}/{self.opts.LAYERS}/{list(self.opts.PARAMS)}?")
        return state_dict
