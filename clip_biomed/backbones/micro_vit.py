"""A micro ViT registered with timm, the image tower of tiny BiomedCLIP-format models.

open_clip's timm adapter can only name a timm model (it cannot pass depth or width), so the tiny
BiomedCLIP-format model (``python -m clip_biomed.backbones tiny --family biomedclip``) names this
one in its ``open_clip_config.json``.  Importing this module registers it; ``formats.py`` imports
it so that any process that loads a tiny directory can build it.
"""
import timm
from timm.models import register_model

MICRO_VIT_NAME = "clip_biomed_vit_micro_patch8_32"
MICRO_VIT_IMAGE_SIZE = 32


@register_model
def clip_biomed_vit_micro_patch8_32(pretrained: bool = False, **kwargs):
    """ViT with 2 blocks of width 64, 8-px patches on 32-px images (~0.1 M parameters, random only)."""
    if pretrained:
        raise ValueError(f"{MICRO_VIT_NAME} is a random test model; it has no pretrained weights")
    arch = dict(img_size=MICRO_VIT_IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**arch, **kwargs})
