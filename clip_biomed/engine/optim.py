"""Optimisers and LR schedulers with Dassl's semantics (dassl.md §6).

Difference from Dassl (documented in docs/engine.md): the warmup schedulers' ``state_dict`` holds
the successor's *state dict* instead of the successor object, and ``load_state_dict`` restores it
into the live successor. Checkpoints therefore load with ``torch.load(weights_only=True)``, and a
resumed run follows the same LR curve as an uninterrupted one (real Dassl freezes the LR after a
resume past warmup, because its successor is an unpickled copy bound to a detached optimizer).
The per-epoch LR values of an uninterrupted run are identical to Dassl's. State dicts saved by real
Dassl (read through ``load_checkpoint``) load too, and also resume on the uninterrupted curve.
"""
import math
import warnings

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "AVAILABLE_OPTIMIZERS", "AVAILABLE_LR_SCHEDULERS", "build_optimizer", "build_lr_scheduler",
    "RAdam", "ConstantWarmupScheduler", "LinearWarmupScheduler",
]

AVAILABLE_OPTIMIZERS = ["adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"]
AVAILABLE_LR_SCHEDULERS = ["single_step", "multi_step", "cosine"]


class RAdam(torch.optim.Optimizer):
    """Rectified Adam as in Liu et al.'s reference code, which Dassl ships (not ``torch.optim.RAdam``).

    Differences from torch's RAdam that change the numbers: weight decay is applied to the weights
    as ``p -= wd * lr * p`` inside the step, and while the variance is not yet tractable
    (N_sma < 5) the update degenerates to SGD with momentum (``degenerated_to_sgd``).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, degenerated_to_sgd=True):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        self.degenerated_to_sgd = degenerated_to_sgd
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _rectified_step_size(self, step, beta1, beta2):
        """Return (N_sma, step size); the step size is <= 0 when no update is to be made."""
        beta2_t = beta2**step
        n_sma_max = 2 / (1 - beta2) - 1
        n_sma = n_sma_max - 2 * step * beta2_t / (1 - beta2_t)
        if n_sma >= 5:
            rect = (1 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)
            return n_sma, math.sqrt(rect) / (1 - beta1**step)
        if self.degenerated_to_sgd:
            return n_sma, 1.0 / (1 - beta1**step)
        return n_sma, -1

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                if grad.is_sparse:
                    raise RuntimeError("RAdam does not support sparse gradients")
                # Updates run in fp32 even for half-precision parameters.
                p_fp32 = p.float()
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p_fp32)
                    state["exp_avg_sq"] = torch.zeros_like(p_fp32)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                state["step"] += 1
                n_sma, step_size = self._rectified_step_size(state["step"], beta1, beta2)
                if step_size <= 0:
                    continue
                if wd != 0:
                    p_fp32.add_(p_fp32, alpha=-wd * lr)
                if n_sma >= 5:
                    p_fp32.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(group["eps"]), value=-step_size * lr)
                else:
                    p_fp32.add_(exp_avg, alpha=-step_size * lr)
                p.copy_(p_fp32)
        return loss


def _param_groups(model, optim_cfg, param_groups):
    """What to optimise: the given groups, staged-LR groups of the direct children, or everything."""
    if param_groups is not None:
        if optim_cfg.STAGED_LR:
            warnings.warn("staged_lr will be ignored, if you need to use staged_lr, "
                          "please bind it with param_groups yourself.")
        return param_groups
    if not optim_cfg.STAGED_LR:
        return model.parameters() if isinstance(model, nn.Module) else model
    if not isinstance(model, nn.Module):
        raise TypeError("When staged_lr is True, model given to build_optimizer() must be an instance of nn.Module")
    if isinstance(model, nn.DataParallel):
        model = model.module
    new_layers = optim_cfg.NEW_LAYERS
    if isinstance(new_layers, str):
        new_layers = [new_layers]
    if not new_layers:
        warnings.warn("new_layers is empty (staged_lr is useless)")
    base_params, new_params = [], []
    for name, module in model.named_children():
        (new_params if name in new_layers else base_params).extend(module.parameters())
    return [{"params": base_params, "lr": optim_cfg.LR * optim_cfg.BASE_LR_MULT}, {"params": new_params}]


def build_optimizer(model, optim_cfg, param_groups=None):
    """Build ``optim_cfg.NAME`` over ``model`` (an nn.Module or an iterable of parameters/groups)."""
    name = optim_cfg.NAME
    if name not in AVAILABLE_OPTIMIZERS:
        raise ValueError(f"optim must be one of {AVAILABLE_OPTIMIZERS}, but got {name}")
    params = _param_groups(model, optim_cfg, param_groups)
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=(name == "amsgrad"))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)


class _BaseWarmupScheduler(LRScheduler):
    """Runs its own rule for ``warmup_epoch`` epochs, then hands every step to ``successor``.

    As in Dassl, the constructor's initial step already sets the warmup LR on the optimizer, and
    once warmup is over this scheduler's own ``last_epoch`` stops advancing.
    """

    def __init__(self, optimizer, successor, warmup_epoch, last_epoch=-1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step(epoch)
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step(epoch)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lrs()

    def warmup_lrs(self):
        raise NotImplementedError

    def state_dict(self):
        """Plain data only: the successor is stored as its own state dict (Dassl stores the object)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        successor_state = state.pop("successor")
        if not isinstance(successor_state, dict):
            # Saved by real Dassl: the successor object, which load_checkpoint reads as a placeholder
            # holding its attributes. Its optimizer is a detached copy; the live one is kept.
            successor_state = {k: v for k, v in successor_state.state.items() if k != "optimizer"}
        self.successor.load_state_dict(successor_state)
        self.__dict__.update(state)


class ConstantWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``cons_lr`` for the first ``warmup_epoch`` epochs."""

    def __init__(self, optimizer, successor, warmup_epoch, cons_lr, last_epoch=-1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lrs(self):
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_BaseWarmupScheduler):
    """LR = ``min_lr`` in epoch 0, then ``base_lr * epoch / warmup_epoch`` until warmup ends."""

    def __init__(self, optimizer, successor, warmup_epoch, min_lr, last_epoch=-1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lrs(self):
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer, optim_cfg):
    """Build the per-epoch scheduler named by ``optim_cfg.LR_SCHEDULER``, wrapped in warmup if asked."""
    name = optim_cfg.LR_SCHEDULER
    stepsize = optim_cfg.STEPSIZE
    if name not in AVAILABLE_LR_SCHEDULERS:
        raise ValueError(f"scheduler must be one of {AVAILABLE_LR_SCHEDULERS}, but got {name}")
    if name == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"For single_step lr_scheduler, stepsize must be an integer, but got {type(stepsize)}")
        if stepsize <= 0:
            stepsize = optim_cfg.MAX_EPOCH
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=stepsize, gamma=optim_cfg.GAMMA)
    elif name == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"For multi_step lr_scheduler, stepsize must be a list, but got {type(stepsize)}")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=optim_cfg.GAMMA)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=float(optim_cfg.MAX_EPOCH))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)
        else:
            raise ValueError(f"WARMUP_TYPE must be 'constant' or 'linear', but got {optim_cfg.WARMUP_TYPE}")
    return scheduler
