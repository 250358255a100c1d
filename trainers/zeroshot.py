"""Zero-shot classification by the frozen backbone: one template, or an LLM prompt ensemble.

* ``Zeroshot`` (published ``Zeroshot<Backbone>``): the classifier of class c is the normalised
  text feature w_c of ``TEMPLATE`` ("a photo of a {}." as published) filled with its name;
* ``ZeroshotEnsemble`` (published ``Zeroshot<Backbone>2``, "BiomedCLIP++" in the paper's figure):
  w_c = normalise( mean_i normalise(text feature of sentence i of class c) ), over the first
  ``N_PROMPTS`` sentences of the prompt file (``PROMPTS``: empty = the packaged file of
  DATASET.NAME; same semantics as TRAINER.BIOMEDCOOP's keys).

Logits are s f w^T with f the normalised image features and s the backbone's logit scale
(reference/biomedcoop.md §2.1).  Nothing trains: run ``train.py --eval-only`` (no --model-dir
needed), e.g. through scripts/zeroshot/*.sh.  The classifier is computed once per run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_biomed.method import ClipTrainer, published_names, register_method
from clip_biomed.prompts import load_prompt_file
from trainers.coop import ZERO_SHOT_TEMPLATE, check_template


def add_config(cfg) -> None:
    cfg.TRAINER.ZEROSHOT = CN()
    cfg.TRAINER.ZEROSHOT.PREC = "fp32"
    cfg.TRAINER.ZEROSHOT.TEMPLATE = ZERO_SHOT_TEMPLATE
    cfg.TRAINER.ZEROSHOT_ENSEMBLE = CN()
    cfg.TRAINER.ZEROSHOT_ENSEMBLE.PREC = "fp32"
    cfg.TRAINER.ZEROSHOT_ENSEMBLE.N_PROMPTS = 50
    cfg.TRAINER.ZEROSHOT_ENSEMBLE.PROMPTS = ""  # a JSON path or dataset name; empty: DATASET.NAME's


def ensemble_classifier(sentence_features: torch.Tensor) -> torch.Tensor:
    """``[C, D]`` class weights from L2-normalised sentence features ``[C, P, D]``: the renormalised mean."""
    return F.normalize(sentence_features.mean(dim=1), dim=-1)


class ZeroShotTrainer(ClipTrainer):
    """What both zero-shot methods share: a frozen classifier ``class_weights()``; not registered."""

    def build_model(self):
        self.build_backbone()
        self.print_trainable_parameters()

    def class_weights(self) -> torch.Tensor:
        """Normalised classifier ``[C, D]``."""
        raise NotImplementedError

    def train(self):
        raise RuntimeError(f"{type(self).__name__} learns nothing: evaluate it with train.py --eval-only "
                           "(no --model-dir needed), e.g. bash scripts/zeroshot/zeroshot.sh <dataset>")

    @torch.no_grad()
    def logits_from_features(self, image_features):
        weights = self.run_constant("class_weights", self.class_weights)
        return self.backbone.logits(image_features, weights)


class Zeroshot(ZeroShotTrainer):
    """Zero-shot classification with one template, on any backbone (MODEL.BACKBONE.NAME)."""

    METHOD = "Zeroshot"
    CONFIG_NODE = "ZEROSHOT"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        check_template(cfg.TRAINER.ZEROSHOT.TEMPLATE, "TRAINER.ZEROSHOT.TEMPLATE")

    def class_weights(self):
        return self.class_text_features(self.opts.TEMPLATE)


class ZeroshotEnsemble(ZeroShotTrainer):
    """Zero-shot classification with an LLM prompt ensemble per class, on any backbone."""

    METHOD = "ZeroshotEnsemble"
    CONFIG_NODE = "ZEROSHOT_ENSEMBLE"

    def build_model(self):
        super().build_model()
        node = f"TRAINER.{self.CONFIG_NODE}"
        # Checked now, so that a class without prompts fails before any image is encoded.
        self.sentences = load_prompt_file(self.opts.PROMPTS or self.cfg.DATASET.NAME, node).for_classes(
            self.dm.dataset.classnames, self.opts.N_PROMPTS, node)

    def class_weights(self):
        n_cls, n_prompts = len(self.sentences), len(self.sentences[0])
        features = self.encode_texts([s for per_class in self.sentences for s in per_class])
        return ensemble_classifier(features.view(n_cls, n_prompts, -1))


register_method(Zeroshot, published_names("Zeroshot{}"))
register_method(ZeroshotEnsemble, published_names("Zeroshot{}2"))
