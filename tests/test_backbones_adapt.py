"""The generic extension of the backbone interface for methods that adapt inside the towers: tower
layouts, token hooks before chosen image blocks, splitting fused projections and wrapping linears."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clip_biomed.backbones import build_backbone
from clip_biomed.backbones.adapt import (LinearWrapper, SplitMultiheadAttention, image_token_hooks, image_tokens,
                                         select_blocks, wrap_linears)
from clip_biomed.backbones.layouts import UnsupportedTowerError
from clip_biomed.backbones.testing import tiny_name

ALL_ROLES = ["q", "k", "v", "o", "fc1", "fc2"]


class PlainLinear(LinearWrapper):
    """A wrapper computing exactly the frozen layer (what a re-parameterisation must equal at start)."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


@pytest.fixture
def models(tiny_root):
    """A fresh backbone per test (wrapping changes it): family -> build()."""
    return lambda family: build_backbone(tiny_name(tiny_root / family), device="cpu")


def features(backbone, images, ids):
    with torch.no_grad():
        return backbone.encode_image(images), backbone.encode_text(ids)


@pytest.mark.parametrize("family,image_kind,text_kind", [
    ("biomedclip", "open_clip timm VisionTransformer", "Hugging Face BERT-style encoder"),
    ("pubmedclip", "open_clip VisionTransformer", "open_clip TextTransformer"),
])
def test_wrapping_every_linear_of_both_towers_keeps_the_outputs(models, family, image_kind, text_kind):
    backbone = models(family)
    assert backbone.tower_layout("image").kind == image_kind and backbone.tower_layout("text").kind == text_kind
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    ids = backbone.tokenize(["a photo of a glioma tumor.", "normal brain", "a pituitary tumor scan"])
    before = features(backbone, images, ids)
    wrapped = {tower: wrap_linears(backbone, tower, ALL_ROLES, range(2), PlainLinear) for tower in ("image", "text")}
    after = features(backbone, images, ids)
    for old, new in zip(before, after):
        assert torch.allclose(old, new, atol=1e-5)
    for tower in wrapped.values():
        assert sorted(tower) == ["0", "1"] and sorted(tower["1"]) == sorted(ALL_ROLES)
    # the fused projections were split (so q/k/v are separate layers), and every wrapper is in place
    block = backbone.tower_layout("image").blocks[1]
    path = backbone.tower_layout("image").linears["k"]
    assert block.get_submodule(path) is wrapped["image"]["1"]["k"]
    assert wrapped["text"]["0"]["v"].out_features == backbone.tower_layout("text").width
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(TypeError, match="wrapped already"):
        wrap_linears(backbone, "image", ["q"], [0], PlainLinear)
    with pytest.raises(ValueError, match="valid: q, k, v, o, fc1, fc2"):
        wrap_linears(backbone, "text", ["qkv"], [0], PlainLinear)


@pytest.mark.parametrize("batch_first", [True, False])
def test_split_multihead_attention_equals_torch_with_every_mask_kind(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    split = SplitMultiheadAttention(mha).eval()
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    causal = torch.full((5, 5), float("-inf")).triu(1)
    padding = torch.tensor([[False, False, False, True, True], [False] * 5])
    for kwargs in ({}, {"attn_mask": causal}, {"attn_mask": causal.isinf()}, {"key_padding_mask": padding}):
        expected = mha(x, x, x, need_weights=False, **kwargs)[0]
        got, weights = split(x, x, x, need_weights=False, **kwargs)
        assert weights is None and torch.allclose(got, expected, atol=1e-6), kwargs
    with pytest.raises(ValueError, match="need_weights=False"):
        split(x, x, x)


@pytest.mark.parametrize("family", ["biomedclip", "pubmedclip"])
def test_token_hooks_act_before_the_chosen_blocks_only_inside_the_context(models, family):
    backbone = models(family)
    tokens = image_tokens(backbone)
    assert (tokens.depth, tokens.width, tokens.prefix_tokens) == (2, 64, 1)
    images = torch.randn(2, 3, 32, 32)
    stock = features(backbone, images, backbone.tokenize(["x"]))[0]
    seen = {}

    def recorder(index):
        def hook(x):
            seen[index] = tuple(x.shape)
            return x
        return hook

    with image_token_hooks(backbone, {0: recorder(0), 1: recorder(1), 2: recorder(2)}):
        hooked = features(backbone, images, backbone.tokenize(["x"]))[0]
    # 32 px / 8 px patches = 16 patch tokens + CLS, batch first, before both blocks and after the last
    assert seen == {0: (2, 17, 64), 1: (2, 17, 64), 2: (2, 17, 64)}
    assert torch.equal(hooked, stock)

    with image_token_hooks(backbone, {1: lambda x: torch.zeros_like(x)}):
        zeroed = features(backbone, images, backbone.tokenize(["x"]))[0]
    assert not torch.allclose(zeroed, stock)
    seen.clear()
    assert torch.equal(features(backbone, images, backbone.tokenize(["x"]))[0], stock), "hooks are removed on exit"
    with pytest.raises(ValueError, match="has 2 blocks"):
        with image_token_hooks(backbone, {3: recorder(3)}):
            pass


def test_a_resnet_image_tower_is_refused_with_the_reason_and_its_text_tower_still_adapts(models):
    backbone = models("pmcclip")
    with pytest.raises(UnsupportedTowerError, match=r"image tower \(ModifiedResNet\).*layouts.py"):
        with image_token_hooks(backbone, {0: lambda x: x}):
            pass
    with pytest.raises(UnsupportedTowerError, match="ModifiedResNet"):
        wrap_linears(backbone, "image", ["q"], [0], PlainLinear)
    ids = backbone.tokenize(["a kidney cyst"])
    before = features(backbone, torch.randn(1, 3, 32, 32), ids)[1]
    wrap_linears(backbone, "text", ALL_ROLES, [0, 1], PlainLinear)
    assert torch.allclose(features(backbone, torch.randn(1, 3, 32, 32), ids)[1], before, atol=1e-6)


def test_block_selections():
    assert select_blocks("all", 12) == list(range(12))
    assert select_blocks("top_middle", 12) == list(range(4, 12))
    assert select_blocks("4-6, 0", 12) == [0, 4, 5, 6]
    with pytest.raises(ValueError, match="outside 0..1"):
        select_blocks("4-11", 2)
    with pytest.raises(ValueError, match="top_middle"):
        select_blocks("upper", 12)
