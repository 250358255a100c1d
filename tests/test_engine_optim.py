"""Optimisers and LR schedulers: dassl.md §6 (LR tables measured on real Dassl, RAdam, staged LR)."""
import io
import math

import pytest
import torch

from clip_biomed.engine.config import get_cfg_default
from clip_biomed.engine.optim import (
    ConstantWarmupScheduler, LinearWarmupScheduler, RAdam, build_lr_scheduler, build_optimizer,
)


def optim_cfg(**overrides):
    cfg = get_cfg_default().OPTIM
    cfg.NAME = "sgd"
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def make_scheduler(cfg):
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer([param], cfg)
    return optimizer, build_lr_scheduler(optimizer, cfg)


def lr_per_epoch(optimizer, scheduler, n_epochs):
    """The LR each epoch trains at, stepping the scheduler once per epoch after the optimizer (as CoOp)."""
    lrs = []
    for _ in range(n_epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


COSINE = dict(LR=0.002, LR_SCHEDULER="cosine")
# dassl.md §6.2, every row; values rounded as printed there.
LR_TABLE = [
    (dict(COSINE, MAX_EPOCH=5, WARMUP_EPOCH=1, WARMUP_TYPE="constant"),
     [1e-5, .002, .00180902, .00130902, .000690983]),
    (dict(COSINE, MAX_EPOCH=5, WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_RECOUNT=False),
     [1e-5, .002, .00144721, .000763932, .000211146]),
    (dict(COSINE, MAX_EPOCH=5), [.002, .00180902, .00130902, .000690983, .000190983]),
    (dict(COSINE, MAX_EPOCH=6, WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5),
     [1e-5, .000666667, .00133333, .002, .00186603, .0015]),
    (dict(COSINE, MAX_EPOCH=6, WARMUP_EPOCH=3, WARMUP_TYPE="linear", WARMUP_MIN_LR=1e-5, WARMUP_RECOUNT=False),
     [1e-5, .000666667, .00133333, .002, .001, .000267949]),
    (dict(LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=(-1,), MAX_EPOCH=6), [.1] * 6 + [.01]),
    (dict(LR=0.1, LR_SCHEDULER="single_step", STEPSIZE=(2,)), [.1, .1, .01, .01, .001, .001]),
    (dict(LR=0.1, LR_SCHEDULER="multi_step", STEPSIZE=(2, 4)), [.1, .1, .01, .01, .001, .001]),
]


@pytest.mark.parametrize("overrides,expected", LR_TABLE)
def test_lr_table_of_dassl(overrides, expected):
    optimizer, scheduler = make_scheduler(optim_cfg(**overrides))
    lrs = lr_per_epoch(optimizer, scheduler, len(expected))
    assert lrs == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_coop_closed_form_never_reaches_zero():
    """CoOp's schedule: e0 = WARMUP_CONS_LR, then LR/2 (1 + cos(pi (e-1) / T)) (dassl.md §6.2)."""
    T, lr = 10, 0.002
    optimizer, scheduler = make_scheduler(optim_cfg(**COSINE, MAX_EPOCH=T, WARMUP_EPOCH=1, WARMUP_TYPE="constant"))
    expected = [1e-5] + [0.5 * lr * (1 + math.cos(math.pi * (e - 1) / T)) for e in range(1, T)]
    assert lr_per_epoch(optimizer, scheduler, T) == pytest.approx(expected, rel=1e-9)


def test_warmup_overwrites_lr_at_construction():
    optimizer, scheduler = make_scheduler(optim_cfg(**COSINE, MAX_EPOCH=5, WARMUP_EPOCH=1, WARMUP_TYPE="constant"))
    assert isinstance(scheduler, ConstantWarmupScheduler)
    assert optimizer.param_groups[0]["lr"] == 1e-5
    assert optimizer.param_groups[0]["initial_lr"] == 0.002
    _, linear = make_scheduler(optim_cfg(**COSINE, MAX_EPOCH=5, WARMUP_EPOCH=2, WARMUP_TYPE="linear"))
    assert isinstance(linear, LinearWarmupScheduler)


def _save_and_reload(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("warmup", [
    dict(WARMUP_EPOCH=1, WARMUP_TYPE="constant"),
    dict(WARMUP_EPOCH=3, WARMUP_TYPE="linear"),
    dict(WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_RECOUNT=False),
])
@pytest.mark.parametrize("stop_at", [1, 2, 4])
def test_resume_follows_the_uninterrupted_lr_curve(warmup, stop_at):
    """State dicts are plain (weights_only loads them) and a resumed scheduler continues the same curve
    (real Dassl freezes the LR here, dassl.md §6.2)."""
    cfg = optim_cfg(**COSINE, MAX_EPOCH=8, **warmup)
    optimizer, scheduler = make_scheduler(cfg)
    uninterrupted = lr_per_epoch(optimizer, scheduler, 8)

    optimizer, scheduler = make_scheduler(cfg)
    first_part = lr_per_epoch(optimizer, scheduler, stop_at)
    saved = _save_and_reload({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    assert isinstance(saved["scheduler"]["successor"], dict)

    optimizer, scheduler = make_scheduler(cfg)  # a fresh process: build, then load (as resume does)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert scheduler.successor.optimizer is optimizer
    second_part = lr_per_epoch(optimizer, scheduler, 8 - stop_at)
    assert first_part + second_part == pytest.approx(uninterrupted, rel=1e-12)


def test_resume_from_a_real_dassl_scheduler_state(tmp_path):
    """Real Dassl's warmup state_dict is its __dict__ minus the optimizer, so it holds the successor
    *object*; load_checkpoint reads that as a placeholder. Resuming from it continues the curve."""
    from clip_biomed.engine.checkpoint import load_checkpoint

    cfg = optim_cfg(**COSINE, MAX_EPOCH=6, WARMUP_EPOCH=1, WARMUP_TYPE="constant")
    optimizer, scheduler = make_scheduler(cfg)
    uninterrupted = lr_per_epoch(optimizer, scheduler, 6)
    optimizer, scheduler = make_scheduler(cfg)
    first_part = lr_per_epoch(optimizer, scheduler, 3)
    dassl_state = {k: v for k, v in scheduler.__dict__.items() if k != "optimizer"}
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": dassl_state}, tmp_path / "legacy.pth.tar")
    saved = load_checkpoint(str(tmp_path / "legacy.pth.tar"))

    optimizer, scheduler = make_scheduler(cfg)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    assert scheduler.successor.optimizer is optimizer  # the live optimizer, not the pickled copy
    assert first_part + lr_per_epoch(optimizer, scheduler, 3) == pytest.approx(uninterrupted, rel=1e-12)


def test_scheduler_config_errors():
    with pytest.raises(ValueError, match="scheduler must be one of"):
        make_scheduler(optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(TypeError, match="must be a list"):
        make_scheduler(optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=3))
    with pytest.raises(TypeError, match="must be an integer"):
        make_scheduler(optim_cfg(LR_SCHEDULER="single_step", STEPSIZE=(2.5,)))
    with pytest.raises(ValueError, match="WARMUP_TYPE"):
        make_scheduler(optim_cfg(WARMUP_EPOCH=1, WARMUP_TYPE="cosine"))


@pytest.mark.parametrize("name,cls,check", [
    ("adam", torch.optim.Adam, lambda g: g["betas"] == (0.9, 0.999) and not g["amsgrad"]),
    ("amsgrad", torch.optim.Adam, lambda g: g["amsgrad"]),
    ("sgd", torch.optim.SGD, lambda g: g["momentum"] == 0.9 and g["dampening"] == 0 and not g["nesterov"]),
    ("rmsprop", torch.optim.RMSprop, lambda g: g["alpha"] == 0.99 and g["momentum"] == 0.9),
    ("radam", RAdam, lambda g: g["eps"] == 1e-8),
    ("adamw", torch.optim.AdamW, lambda g: g["betas"] == (0.9, 0.999)),
])
def test_build_optimizer_names(name, cls, check):
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, optim_cfg(NAME=name, LR=0.01, WEIGHT_DECAY=1e-3))
    group = optimizer.param_groups[0]
    assert type(optimizer) is cls
    assert group["lr"] == 0.01 and group["weight_decay"] == 1e-3 and check(group)
    assert len(group["params"]) == 2


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"optim must be one of \['adam', .*'adamw'\], but got lbfgs"):
        build_optimizer(torch.nn.Linear(2, 2), optim_cfg(NAME="lbfgs"))


def test_staged_lr_groups_direct_children():
    model = torch.nn.Sequential()
    model.add_module("backbone", torch.nn.Linear(2, 2))
    model.add_module("head", torch.nn.Linear(2, 3))
    cfg = optim_cfg(LR=0.1, STAGED_LR=True, NEW_LAYERS="head", BASE_LR_MULT=0.1)
    optimizer = build_optimizer(model, cfg)
    base, new = optimizer.param_groups
    assert base["lr"] == pytest.approx(0.01) and new["lr"] == 0.1
    assert {id(p) for p in new["params"]} == {id(p) for p in model.head.parameters()}
    with pytest.raises(TypeError, match="nn.Module"):
        build_optimizer(list(model.parameters()), cfg)
    with pytest.warns(UserWarning, match="staged_lr will be ignored"):
        build_optimizer(model, cfg, param_groups=[{"params": list(model.parameters())}])


def test_radam_matches_the_reference_update_rule():
    """Steps 1-4 (N_sma < 5): SGD with bias-corrected momentum; from step 5 on: rectified Adam;
    weight decay applied as p -= wd * lr * p. Computed by hand from Liu et al.'s algorithm."""
    lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-8
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = RAdam([param], lr=lr, weight_decay=wd)
    expected = param.detach().double()
    m = torch.zeros(2, dtype=torch.float64)
    v = torch.zeros(2, dtype=torch.float64)
    for step in range(1, 8):
        param.grad = param.detach() * 3.0 + 1.0  # gradient of a quadratic at the current point
        grad = param.grad.double()
        optimizer.step()
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        n_max = 2 / (1 - b2) - 1
        n_sma = n_max - 2 * step * b2**step / (1 - b2**step)
        expected = expected * (1 - wd * lr)
        if n_sma >= 5:
            r = math.sqrt((1 - b2**step) * (n_sma - 4) / (n_max - 4) * (n_sma - 2) / n_sma * n_max / (n_max - 2))
            expected = expected - lr * r / (1 - b1**step) * m / (v.sqrt() + eps)
        else:
            expected = expected - lr / (1 - b1**step) * m
        assert torch.allclose(param.detach().double(), expected, rtol=1e-5, atol=1e-7), step
    assert optimizer.state[param]["step"] == 7
