"""One precision setting for every trainer: ``fp32`` | ``fp16`` | ``bf16`` | ``amp``.

``Precision(setting, device)`` (device default: CUDA if available, else CPU) knows, for that device,

* ``autocast()``: the autocast context to run forward passes in (a no-op for fp32);
* ``weight_dtype``: the dtype the *frozen* backbone is stored in (``build_backbone`` uses it);
  trainable parameters always stay float32 (autocast computes in low precision, the optimizer
  updates float32 master values);
* ``backward`` / ``step`` / ``backward_and_step``: the backward pass and optimizer step, through a
  ``torch.amp.GradScaler`` where float16 gradients need one.

| setting | CUDA                                          | CPU                                     |
|---------|-----------------------------------------------|-----------------------------------------|
| fp32    | float32, no autocast                          | same                                    |
| amp     | float32 weights, fp16 autocast + GradScaler   | float32 weights, bf16 autocast          |
| fp16    | fp16 frozen weights, fp16 autocast + scaler   | falls back to bf16 (with a warning)     |
| bf16    | bf16 frozen weights, bf16 autocast            | bf16 frozen weights, bf16 autocast      |

The published BiomedCoOp code accepted ``fp16`` but ran float32, and its ``amp`` path crashed; here
each setting does what it says (docs/backbones.md).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterable, List, Optional, Sequence, Union

import torch

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
Optimizers = Union[torch.optim.Optimizer, Iterable[torch.optim.Optimizer]]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Precision:
    """Autocast context, frozen-weight dtype and (scaled) backward/step for one setting on one device."""

    def __init__(self, setting: str = "fp32", device: Union[str, torch.device, None] = None):
        self.check(setting)
        self.device = torch.device(device) if device is not None else default_device()
        on_cuda = self.device.type == "cuda"
        if setting == "fp16" and not on_cuda:
            warnings.warn(f"fp16 needs a CUDA device; on {self.device.type} bf16 is used instead", stacklevel=2)
            setting = "bf16"
        if setting == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
            raise ValueError("this GPU does not support bf16; use PREC fp16 or amp")
        self.setting = setting  # what is actually used
        if setting == "fp32":
            self.autocast_dtype: Optional[torch.dtype] = None
        elif setting == "bf16" or not on_cuda:  # amp on CPU: bf16 is CPU autocast's fast type
            self.autocast_dtype = torch.bfloat16
        else:
            self.autocast_dtype = torch.float16
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(setting, torch.float32)
        # float16 gradients underflow without loss scaling; bf16 has float32's range
        self.scaler = torch.amp.GradScaler(self.device.type) if self.autocast_dtype == torch.float16 else None

    @staticmethod
    def check(setting: str) -> None:
        """Raise for an unknown setting (usable in a trainer's ``check_cfg``, before any device exists)."""
        if setting not in PRECISIONS:
            raise ValueError(f"unknown precision {setting!r}; choose one of {', '.join(PRECISIONS)} "
                             "(e.g. TRAINER.<METHOD>.PREC)")

    def __repr__(self) -> str:
        return (f"Precision({self.setting!r} on {self.device}, autocast={self.autocast_dtype}, "
                f"weights={self.weight_dtype}, scaler={self.scaler is not None})")

    def autocast(self):
        """Context manager for forward passes (including the loss)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor, retain_graph: bool = False) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward(retain_graph=retain_graph)

    def gradients(self, loss: torch.Tensor, params: Sequence[torch.Tensor],
                  retain_graph: bool = False) -> List[torch.Tensor]:
        """True gradients of ``loss`` w.r.t. ``params`` (float32), leaving ``.grad`` untouched.

        The backward pass goes through the scaler like :meth:`backward` (so float16 gradients do
        not underflow) and the result is divided by the same scale; an overflow shows as inf/NaN.
        For gradient surgery that needs a second loss's gradient next to ``.grad`` (ProGrad).
        """
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        grads = torch.autograd.grad(scaled, list(params), retain_graph=retain_graph, allow_unused=True)
        inverse = 1.0 / self.scaler.get_scale() if self.scaler is not None else 1.0
        return [torch.zeros_like(p, dtype=torch.float32) if g is None else g.float() * inverse
                for p, g in zip(params, grads)]

    def unscale_(self, optimizers: Optimizers) -> None:
        """Make ``.grad`` hold true gradients before reading or editing them (clipping, projection)."""
        if self.scaler is not None:
            for optimizer in _as_list(optimizers):
                self.scaler.unscale_(optimizer)

    def step(self, optimizers: Optimizers) -> None:
        """Optimizer step(s); with a scaler, skipped when gradients overflowed, and the scale updated."""
        for optimizer in _as_list(optimizers):
            if self.scaler is None:
                optimizer.step()
            elif _has_grads(optimizer):  # GradScaler.step asserts on an optimizer that got no gradient
                self.scaler.step(optimizer)
        if self.scaler is not None:
            self.scaler.update()

    def backward_and_step(self, loss: torch.Tensor, optimizers: Optimizers, *, zero_grad: bool = True,
                          check_finite: bool = True, max_grad_norm: Optional[float] = None) -> None:
        """One training update: zero_grad, finite-loss check, backward, optional clipping, step.

        ``optimizers``: one optimizer or several (e.g. every optimizer a Dassl trainer registered).
        The check raises Dassl's ``FloatingPointError("Loss is infinite or NaN!")``.
        ``max_grad_norm`` clips the norm over all parameters of the optimizers.
        """
        optimizers = _as_list(optimizers)
        if zero_grad:
            for optimizer in optimizers:
                optimizer.zero_grad()
        if check_finite and not torch.isfinite(loss).all():
            raise FloatingPointError("Loss is infinite or NaN!")
        self.backward(loss)
        if max_grad_norm is not None:
            self.unscale_(optimizers)
            parameters = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        self.step(optimizers)

    def state_dict(self) -> dict:
        """Scaler state for checkpoints (empty without a scaler)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def _as_list(optimizers: Optimizers) -> List[torch.optim.Optimizer]:
    return [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else list(optimizers)


def _has_grads(optimizer: torch.optim.Optimizer) -> bool:
    # a plain optimizer.step() skips such an optimizer's parameters too (e.g. a registered model the loss did not use)
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])
