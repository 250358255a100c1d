"""Where the transformer blocks of each kind of tower live: the one place that knows module trees.

Methods that adapt inside the towers (visual prompt tokens, fusion modules, re-parameterised linear
layers; ``adapt.py`` holds the generic machinery) never name a module path.  They ask the backbone
for a tower's :class:`TowerLayout` (``backbone.tower_layout("image" | "text")``), which says

* ``blocks``: the tower's transformer blocks, in order;
* ``linears``: the path, inside one block, of the Linear layer of each *role*: ``q``, ``k``, ``v``
  (attention projections), ``o`` (attention output), ``fc1``, ``fc2`` (the MLP);
* ``fused``: paths of modules that hold several roles at once (timm's ``attn.qkv``, PyTorch's
  ``nn.MultiheadAttention``) and the ``adapt`` class that splits them into one Linear per role;
* ``width``, ``prefix_tokens`` (tokens before the patch tokens: CLS, registers) and ``batch_first``
  (the token layout blocks receive), which token hooks need.

A layout is found by the tower's module type.  Supported: open_clip's timm ViT tower (BiomedCLIP),
open_clip's own ViT and text transformer (CLIP, PubMedCLIP) and Hugging Face BERT-style encoders
behind open_clip's ``HFTextEncoder`` (BiomedCLIP and PMC-CLIP text towers), and the towers of
transformers' CLIPModel and SiglipModel (families hf-clip, siglip).  A ResNet image tower
(PMC-CLIP, CLIP RN50) has no layout: methods that need one fail with an error naming the tower.

A new family adds support by registering a function ``tower -> TowerLayout | None`` with
:func:`register_layout` (returning None for towers it does not describe); nothing else changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from open_clip.hf_model import HFTextEncoder
from open_clip.timm_model import TimmModel
from open_clip.transformer import ResidualAttentionBlock, TextTransformer, VisionTransformer
from torch import nn

from .adapt import SplitMultiheadAttention, SplitQKV

ROLES = ("q", "k", "v", "o", "fc1", "fc2")


@dataclass(frozen=True)
class TowerLayout:
    """The blocks of one tower and where the linear layers of each role sit inside a block."""

    kind: str                          # what was recognised, e.g. "timm VisionTransformer"
    blocks: Sequence[nn.Module]
    linears: Mapping[str, str]         # role -> path inside a block (after splitting ``fused``)
    width: int                         # token width inside the blocks
    fused: Mapping[str, type] = field(default_factory=dict)  # path inside a block -> splitter class
    prefix_tokens: int = 0             # image towers: tokens before the first patch token
    batch_first: bool = True           # blocks receive [B, N, D] (False: [N, B, D])


Describer = Callable[[nn.Module], Optional[TowerLayout]]
_DESCRIBERS: List[Describer] = []
SUPPORTED = ("open_clip timm VisionTransformer", "open_clip VisionTransformer", "open_clip TextTransformer",
             "Hugging Face BERT-style encoder (open_clip HFTextEncoder)",
             "transformers CLIP and SigLIP text/vision transformers")


class UnsupportedTowerError(ValueError):
    """A tower whose blocks no registered layout describes."""


def register_layout(describe: Describer) -> Describer:
    """Register ``describe(tower) -> TowerLayout`` (None for a tower it does not describe)."""
    _DESCRIBERS.append(describe)
    return describe


def find_layout(backbone, tower: str) -> TowerLayout:
    """The layout of ``backbone``'s ``image`` or ``text`` tower, or an error naming the tower."""
    towers = {"image": lambda: backbone.image_tower, "text": lambda: backbone.text_tower}
    if tower not in towers:
        raise ValueError(f"tower must be 'image' or 'text', got {tower!r}")
    module = towers[tower]()
    for describe in _DESCRIBERS:
        layout = describe(module)
        if layout is not None:
            return layout
    raise UnsupportedTowerError(
        f"backbone {getattr(backbone, 'name', '?')}: its {tower} tower ({type(module).__name__}) is not made of "
        f"transformer blocks this project knows, so a method that acts inside the {tower} tower cannot use it. "
        f"Supported towers: {'; '.join(SUPPORTED)} (e.g. BiomedCLIP, CLIP, PubMedCLIP; PMC-CLIP's image tower is "
        "a ResNet). A new family registers its layout in clip_biomed/backbones/layouts.py.")


# --- the known towers ------------------------------------------------------------------------------
TIMM_VIT_LINEARS: Dict[str, str] = {"q": "attn.qkv.q", "k": "attn.qkv.k", "v": "attn.qkv.v", "o": "attn.proj",
                                    "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
OPEN_CLIP_LINEARS: Dict[str, str] = {"q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj",
                                     "o": "attn.out_proj", "fc1": "mlp.c_fc", "fc2": "mlp.c_proj"}
BERT_LINEARS: Dict[str, str] = {"q": "attention.self.query", "k": "attention.self.key",
                                "v": "attention.self.value", "o": "attention.output.dense",
                                "fc1": "intermediate.dense", "fc2": "output.dense"}


@register_layout
def _timm_vision_transformer(tower: nn.Module) -> Optional[TowerLayout]:
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    trunk = getattr(tower, "trunk", None)
    if not (isinstance(tower, TimmModel) and isinstance(trunk, TimmViT)
            and all(isinstance(getattr(b.attn, "qkv", None), (nn.Linear, SplitQKV)) for b in trunk.blocks)):
        return None
    return TowerLayout("open_clip timm VisionTransformer", trunk.blocks, TIMM_VIT_LINEARS, trunk.embed_dim,
                       fused={"attn.qkv": SplitQKV}, prefix_tokens=trunk.num_prefix_tokens)


@register_layout
def _open_clip_transformer(tower: nn.Module) -> Optional[TowerLayout]:
    """open_clip's own ViT and text transformer, with the default blocks (nn.MultiheadAttention;
    open_clip's "custom" blocks use their own attention module)."""
    if not isinstance(tower, (VisionTransformer, TextTransformer)):
        return None
    transformer = tower.transformer
    if not all(isinstance(b, ResidualAttentionBlock)
               and isinstance(b.attn, (nn.MultiheadAttention, SplitMultiheadAttention)) for b in transformer.resblocks):
        return None
    vision = isinstance(tower, VisionTransformer)
    return TowerLayout(f"open_clip {type(tower).__name__}", transformer.resblocks, OPEN_CLIP_LINEARS,
                       transformer.width, fused={"attn": SplitMultiheadAttention}, prefix_tokens=int(vision),
                       batch_first=transformer.batch_first)


@register_layout
def _hf_bert_encoder(tower: nn.Module) -> Optional[TowerLayout]:
    layers = getattr(getattr(getattr(tower, "transformer", None), "encoder", None), "layer", None)
    if not (isinstance(tower, HFTextEncoder) and isinstance(layers, nn.ModuleList) and len(layers)):
        return None
    try:
        layers[0].get_submodule(BERT_LINEARS["q"])
    except AttributeError:
        return None
    return TowerLayout("Hugging Face BERT-style encoder", layers, BERT_LINEARS, tower.transformer.config.hidden_size)


HF_CLIP_LINEARS: Dict[str, str] = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                                   "o": "self_attn.out_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}


@register_layout
def _transformers_clip_tower(tower: nn.Module) -> Optional[TowerLayout]:
    """The text and vision transformers of transformers' CLIPModel and SiglipModel (families hf-clip,
    siglip): ``encoder.layers`` of blocks with separate q/k/v/out projections, batch first.  CLIP's
    vision tower puts a class token before the patches; SigLIP's has none (it pools with an
    attention head)."""
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    config = getattr(tower, "config", None)
    if not (isinstance(layers, nn.ModuleList) and len(layers) and hasattr(config, "hidden_size")):
        return None
    try:
        for path in HF_CLIP_LINEARS.values():
            if not isinstance(layers[0].get_submodule(path), nn.Linear):
                return None
    except AttributeError:
        return None
    embeddings = getattr(tower, "embeddings", None)
    vision = hasattr(embeddings, "patch_embedding")
    prefix = int(vision and getattr(embeddings, "class_embedding", None) is not None)
    return TowerLayout(f"transformers {type(tower).__name__}", layers, HF_CLIP_LINEARS, config.hidden_size,
                       prefix_tokens=prefix)
