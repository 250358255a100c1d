"""clip_biomed.precision: one setting -> autocast, frozen-weight dtype, (scaled) backward and step."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clip_biomed.backbones.testing import build_tiny  # noqa: E402
from clip_biomed.precision import PRECISIONS, Precision  # noqa: E402


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return build_tiny("biomedclip", tmp_path_factory.mktemp("precision") / "biomedclip")


def _prompt_loss(backbone, ctx, labels=(0, 1)):
    """A CoOp-style loss: learned context spliced into two prompts, logits against two images."""
    ids = backbone.tokenize(["X X X X glioma tumor.", "X X X X normal brain."])
    embeds = backbone.token_embedding(ids)
    prompts = torch.cat([embeds[:, :1], ctx.expand(2, -1, -1), embeds[:, 5:]], dim=1)
    text = F.normalize(backbone.encode_text_embeddings(prompts, ids), dim=-1)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    image = F.normalize(backbone.encode_image(images), dim=-1)
    return F.cross_entropy(backbone.logit_scale * image @ text.t(), torch.tensor(labels))


def test_unknown_setting_names_the_choices():
    with pytest.raises(ValueError, match="fp32, fp16, bf16, amp"):
        Precision("half", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'FP32'"):
        Precision.check("FP32")
    for setting in PRECISIONS:
        Precision.check(setting)


@pytest.mark.parametrize("setting, autocast_dtype, weight_dtype", [
    ("fp32", None, torch.float32),
    ("amp", torch.bfloat16, torch.float32),
    ("bf16", torch.bfloat16, torch.bfloat16),
])
def test_cpu_settings(setting, autocast_dtype, weight_dtype):
    precision = Precision(setting, "cpu")
    assert precision.setting == setting
    assert (precision.autocast_dtype, precision.weight_dtype) == (autocast_dtype, weight_dtype)
    assert precision.scaler is None and precision.state_dict() == {}
    x = torch.randn(4, 4)
    with precision.autocast():
        assert (x @ x).dtype == (autocast_dtype or torch.float32)
    if setting == "fp32":
        assert isinstance(precision.autocast(), contextlib.nullcontext)


def test_fp16_on_cpu_falls_back_to_bf16_with_a_warning():
    with pytest.warns(UserWarning, match="fp16 needs a CUDA device"):
        precision = Precision("fp16", "cpu")
    assert (precision.setting, precision.autocast_dtype, precision.weight_dtype) == \
        ("bf16", torch.bfloat16, torch.bfloat16)


def test_bf16_autocast_through_a_backbone_gives_finite_float32_grads_and_steps(backbone):
    precision = Precision("bf16", "cpu")
    ctx = torch.nn.Parameter(torch.randn(4, backbone.ctx_dim) * 0.02)
    optimizer = torch.optim.SGD([ctx], lr=0.1)
    before = ctx.detach().clone()
    with precision.autocast():
        loss = _prompt_loss(backbone, ctx)
    precision.backward_and_step(loss, optimizer, zero_grad=True)
    assert ctx.grad is not None and ctx.grad.dtype == torch.float32 and torch.isfinite(ctx.grad).all()
    assert ctx.grad.abs().sum() > 0 and not torch.equal(ctx.detach(), before)
    assert all(p.grad is None for p in backbone.parameters())


def test_backward_and_step_equals_the_plain_update_and_zeroes_old_grads(backbone):
    start = torch.randn(4, backbone.ctx_dim) * 0.02
    plain, helped = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    plain_opt, helped_opt = torch.optim.SGD([plain], lr=0.5), torch.optim.SGD([helped], lr=0.5)
    precision = Precision("fp32", "cpu")
    helped.grad = torch.full_like(helped, 100.0)  # a stale gradient must not leak into the step
    for _ in range(2):
        plain_opt.zero_grad()
        _prompt_loss(backbone, plain).backward()
        plain_opt.step()
        precision.backward_and_step(_prompt_loss(backbone, helped), helped_opt)
    assert torch.allclose(plain, helped, atol=1e-6)


def test_nan_loss_raises_dassls_error_before_any_update():
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([w], lr=1.0)
    with pytest.raises(FloatingPointError, match="Loss is infinite or NaN!"):
        Precision("fp32", "cpu").backward_and_step((w * float("nan")).sum(), optimizer)
    assert torch.equal(w.detach(), torch.ones(2))


def test_gradient_clipping_over_several_optimizers():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    optimizers = [torch.optim.SGD([a], lr=1.0), torch.optim.SGD([b], lr=1.0)]
    loss = (a * 30).sum() + (b * 40).sum()  # gradient norm sqrt(3*900 + 4*1600) > 1
    Precision("fp32", "cpu").backward_and_step(loss, optimizers, max_grad_norm=1.0)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.cat([a, b]).norm().item() == pytest.approx(1.0, rel=1e-5)  # both stepped


def test_scaled_step_skips_an_optimizer_whose_parameters_got_no_gradient():
    """On CUDA fp16/amp a GradScaler steps; it asserts on an optimizer without gradients (CPU scaler here)."""
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizers = [torch.optim.SGD([used], lr=0.5), torch.optim.SGD([unused], lr=0.5)]
    precision = Precision("fp32", "cpu")
    precision.scaler = torch.amp.GradScaler("cpu")  # what Precision("fp16" | "amp", "cuda") holds
    precision.backward_and_step((used * 3).sum(), optimizers)
    assert torch.equal(used.detach(), torch.full((2,), -0.5)) and torch.equal(unused.detach(), torch.ones(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("setting, weight_dtype", [("fp16", torch.float16), ("amp", torch.float32)])
def test_cuda_fp16_uses_a_grad_scaler(setting, weight_dtype):
    precision = Precision(setting, "cuda")
    assert precision.autocast_dtype == torch.float16 and precision.weight_dtype == weight_dtype
    assert precision.scaler is not None
    w = torch.nn.Parameter(torch.ones(8, 8, device="cuda"))
    optimizer = torch.optim.SGD([w], lr=0.1)
    with precision.autocast():
        loss = (w @ w).float().mean()
    precision.backward_and_step(loss, optimizer)
    assert torch.isfinite(w).all() and not torch.equal(w.detach(), torch.ones_like(w))
    state = precision.state_dict()
    again = Precision(setting, "cuda")
    again.load_state_dict(state)
    assert again.scaler.get_scale() == precision.scaler.get_scale()
