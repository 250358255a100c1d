"""ProGrad (Zhu et al., ICCV 2023): CoOp updates that never contradict the zero-shot model.

Two losses on the logits l = s f t^T of a batch (reference/biomedcoop.md §2.1):

* L_ce = CE(l, y);
* L_kd = T^2 * mean_b( -sum_c softmax(z_b / T)_c * log_softmax(l_b / T)_c ), a soft cross-entropy
  to the teacher logits z = s f w^T of the frozen zero-shot classifier w (``TEMPLATE``, "a photo of
  a {}.", encoded once per run).

The update uses g_ce = grad L_ce, projected per parameter tensor when it conflicts with
g_kd = grad L_kd:  g = g_ce - LAMBDA * min(g_ce . u, 0) * u  with u = g_kd / |g_kd|, i.e. the
component of g_ce against the KD direction is removed when cos(g_ce, g_kd) < 0, and g = g_ce
otherwise.  Only ``prompt_learner.ctx`` trains.  The context vectors that CTX_INIT does not cover
start at zero (the published ProGrad initialisation; CoOp draws them at random).

Fixes of the published code: the teacher is the frozen zero-shot classifier on every backbone (the
published ProGrad_BiomedCLIP distilled from the student itself, so its KD gradient was ~0 and it
ran CoOp; ``TEACHER student`` reproduces that); ``CTX_INIT`` is honoured (the published code used
the template's words, as ``CTX_INIT_FROM_TEMPLATE True`` does); every precision works: the KD and
CE gradients are both taken through the loss scaler and unscaled before the projection (the
published amp path crashed on a tuple).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from clip_biomed.method import published_names, register_method
from clip_biomed.prompt_learner import PromptLearner
from trainers.coop import ZeroShotGuidedCoOp, guided_context_config

PUBLISHED_ALIASES = published_names("ProGrad_{}")
LOSS_NAMES = ("prograd",)
# zero_shot: the frozen zero-shot classifier; student: the student's own detached logits (the
# published ProGrad_BiomedCLIP, which makes ProGrad CoOp)
TEACHERS = ("zero_shot", "student")


def add_config(cfg) -> None:
    cfg.TRAINER.PROGRAD = guided_context_config()
    # The published trainer requires NAME "prograd" (its only loss); the published configs set it.
    cfg.TRAINER.PROGRAD.NAME = "prograd"
    cfg.TRAINER.PROGRAD.T = 1.0
    cfg.TRAINER.PROGRAD.LAMBDA = 1.0
    cfg.TRAINER.PROGRAD.TEACHER = "zero_shot"


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of the cross-entropy from softmax(teacher / T) to softmax(student / T)."""
    teacher = F.softmax(teacher_logits / temperature, dim=-1)
    cross_entropy = -(teacher * F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1)
    return temperature ** 2 * cross_entropy.mean()


def project_gradient(ce_grad: torch.Tensor, kd_grad: torch.Tensor, strength: float) -> torch.Tensor:
    """ProGrad's rule: ``ce_grad - strength * min(ce_grad . u, 0) * u`` with ``u`` the unit KD gradient.

    A zero or non-finite KD gradient (no direction to keep to) leaves ``ce_grad`` unchanged.
    """
    norm = kd_grad.norm()
    usable = torch.isfinite(norm) & (norm > 0)
    unit = torch.where(usable, kd_grad / norm, torch.zeros_like(kd_grad))
    along = (ce_grad * unit).sum()
    return ce_grad - strength * along.clamp(max=0) * unit


class ProGrad(ZeroShotGuidedCoOp):
    """ProGrad on any backbone (MODEL.BACKBONE.NAME, default BiomedCLIP)."""

    METHOD = "ProGrad"
    CONFIG_NODE = "PROGRAD"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        opts = cfg.TRAINER.PROGRAD
        if opts.NAME not in LOSS_NAMES:
            raise ValueError(f"TRAINER.PROGRAD.NAME {opts.NAME!r} is not a ProGrad loss; "
                             f"valid: {', '.join(LOSS_NAMES)}")
        if opts.TEACHER not in TEACHERS:
            raise ValueError(f"TRAINER.PROGRAD.TEACHER {opts.TEACHER!r} is unknown; valid: {', '.join(TEACHERS)} "
                             "(student reproduces the published ProGrad_BiomedCLIP)")

    def build_prompt_learner(self, cls=PromptLearner, **kwargs) -> PromptLearner:
        return super().build_prompt_learner(cls, uncovered_init="zeros", **kwargs)

    def teacher_logits(self, logits, image_features) -> torch.Tensor:
        if self.opts.TEACHER == "student":
            return logits.detach()
        return self.backbone.logits(image_features, self.zero_shot_text_features())

    def losses(self, logits, labels, image_features, text_features):
        losses = super().losses(logits, labels, image_features, text_features)
        losses["kd"] = distillation_loss(logits, self.teacher_logits(logits, image_features), self.opts.T)
        return losses

    def backward_and_step(self, losses: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Step along the CE gradient projected against the KD gradient (both true, unscaled)."""
        optimizer = self._optims["prompt_learner"]
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        optimizer.zero_grad()
        if not all(torch.isfinite(loss).all() for loss in losses.values()):
            raise FloatingPointError("Loss is infinite or NaN!")
        kd_grads = self.precision.gradients(losses["kd"], params, retain_graph=True)
        self.precision.backward(losses["ce"])
        # .grad now holds the true CE gradient; an overflow of it makes the scaler skip the step.
        # (An overflowed KD gradient leaves that step's CE gradient unprojected: project_gradient.)
        self.precision.unscale_(optimizer)
        for param, kd_grad in zip(params, kd_grads):
            param.grad = project_gradient(param.grad, kd_grad, self.opts.LAMBDA)
        self.precision.step(optimizer)
        return losses["ce"]


register_method(ProGrad, PUBLISHED_ALIASES)
