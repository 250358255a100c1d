"""Trainable parameters of Biomed-DPT, BiomedAP, CLIP-SVD and CLIP-LoRA on full-size architectures.

    python benchmarks/count_parameters.py [--device cpu|cuda]

Builds BiomedCLIP's architecture (timm ViT-B/16 + BERT-base + MLP projection) and OpenAI CLIP
ViT-B/16's with random weights, offline (counts do not depend on the weights), and applies each
method's own parts, as its trainer does: the context (N_CTX x text width), BiomedAP's two fusion
modules, CLIP-SVD's and CLIP-LoRA's wrappers on both towers (``wrap_linears``).  It prints the
counts (the README's table quotes them) and asserts nothing.
"""
import argparse
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks.bench_train_step import full_size_biomedclip  # noqa: E402
from clip_biomed.backbones.adapt import image_tokens, select_blocks, wrap_linears  # noqa: E402
from clip_biomed.backbones.base import PreprocessInfo  # noqa: E402
from clip_biomed.backbones.formats import instantiate  # noqa: E402
from clip_biomed.backbones.open_clip_backbone import OpenClipBackbone  # noqa: E402
from trainers.biomedap import CrossModalPromptFusion  # noqa: E402
from trainers.cliplora import LoRALinear  # noqa: E402
from trainers.clipsvd import SingularValueLinear  # noqa: E402


def full_size_clip(device):
    """OpenAI CLIP ViT-B/16's architecture with random weights."""
    import open_clip

    model = instantiate(open_clip.get_model_config("ViT-B-16")).to(device).eval().requires_grad_(False)
    info = PreprocessInfo(224, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    return OpenClipBackbone.wrap(model, open_clip.get_tokenizer("ViT-B-16"), name="CLIP ViT-B/16 (random)",
                                 family="clip", context_length=77, preprocess=info)


def count(modules):
    return sum(p.numel() for module in modules for p in module.parameters() if p.requires_grad)


def tower_tuning(build, wrap, roles, layers="all"):
    backbone = build()
    wrappers = [wrap_linears(backbone, tower, roles, select_blocks(layers, len(backbone.tower_layout(tower).blocks)),
                             wrap) for tower in ("image", "text")]
    return count(wrappers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    for label, build in (("BiomedCLIP", lambda: full_size_biomedclip(args.device)),
                         ("CLIP ViT-B/16", lambda: full_size_clip(args.device))):
        backbone = build()
        total = sum(p.numel() for p in backbone.parameters())
        width, ctx_dim = image_tokens(backbone).width, backbone.ctx_dim
        fusion = 2 * count([CrossModalPromptFusion(width, ctx_dim)])
        print(f"{label}: {total:,} frozen parameters")
        print(f"  BiomedDPT  context, N_CTX 4/5/6: {4 * ctx_dim:,} / {5 * ctx_dim:,} / {6 * ctx_dim:,}")
        print(f"  BiomedAP   two fusion modules {fusion:,} + context (N_CTX 5: {fusion + 5 * ctx_dim:,})")
        svd = tower_tuning(build, SingularValueLinear, ["q", "k", "v", "o", "fc1", "fc2"])
        svd_top = tower_tuning(build, SingularValueLinear, ["q", "k", "v", "o", "fc1", "fc2"], "top_middle")
        print(f"  CLIPSVD    singular values, all blocks: {svd:,} ({100 * svd / total:.3f}% of the frozen model); "
              f"top_middle blocks: {svd_top:,}")
        lora = tower_tuning(build, lambda linear: LoRALinear(linear, rank=2, alpha=1.0, dropout=0.25), ["q", "k", "v"])
        print(f"  CLIPLoRA   rank-2 q/k/v, both towers: {lora:,}")


if __name__ == "__main__":
    main()
