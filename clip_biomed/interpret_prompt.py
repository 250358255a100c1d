"""Nearest vocabulary words of learned context vectors.

    python -m clip_biomed.interpret_prompt output/.../prompt_learner/model.pth.tar-100 --topk 3

The backbone is the one the checkpoint records (this project's checkpoints carry it in their metadata;
the published full-model checkpoints, which do not, were trained on BiomedCLIP); ``--backbone NAME``
overrides it, e.g. for a model that now lives in another folder.  Each context vector is compared (Euclidean distance, as in CoOp's interpretation) with every row of the
backbone's word-embedding matrix.  Works for shared and class-specific contexts, for this project's
checkpoints and the published full-model ones.  Learned vectors need not be close to any word.
"""
from __future__ import annotations

import argparse
import sys

import torch

from clip_biomed.dassl import load_checkpoint
from clip_biomed.prompt_learner import context_state_dict


PUBLISHED_BACKBONE = "BiomedCLIP"  # the backbone of the authors' released checkpoints (no metadata)


def learned_context(path: str):
    """The context ``[..., n_ctx, D]`` of a checkpoint and the backbone it records (None if it records none)."""
    state = context_state_dict(load_checkpoint(path)["state_dict"])
    return state["ctx"].float(), state.get("_extra_state", {}).get("backbone")


def nearest_words(ctx: torch.Tensor, embeddings: torch.Tensor, vocabulary, topk: int):
    """For each context vector ``[..., n_ctx, D]``: a list of (word, distance) pairs, closest first."""
    flat = ctx.reshape(-1, ctx.shape[-1])
    distances = torch.cdist(flat, embeddings.float())
    values, indices = distances.topk(topk, dim=1, largest=False)
    return [
        [(vocabulary[i], d) for i, d in zip(row_idx.tolist(), row_val.tolist())]
        for row_idx, row_val in zip(indices, values)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="prompt_learner/model.pth.tar-N of a training run")
    parser.add_argument("--backbone", help="the backbone the context was trained with (default: the one the "
                                               f"checkpoint records, else {PUBLISHED_BACKBONE})")
    parser.add_argument("--topk", type=int, default=1)
    args = parser.parse_args(argv)

    from clip_biomed.backbones import build_backbone

    ctx, recorded = learned_context(args.checkpoint)
    name = args.backbone or recorded or PUBLISHED_BACKBONE
    how = ("--backbone" if args.backbone else "recorded in the checkpoint" if recorded
           else "the checkpoint records none: the published checkpoints' backbone")
    print(f"Backbone: {name} ({how})")
    if args.backbone and recorded and args.backbone != recorded:
        print(f"Warning: the checkpoint was trained with {recorded}")
    try:
        backbone = build_backbone(name)
    except (OSError, ValueError) as err:
        if args.backbone:
            raise
        raise SystemExit(f"error: cannot build the backbone {name} ({how}): {err}\n"
                         "Pass --backbone NAME (e.g. local-dir:<where the model is now>)") from None
    vocabulary = backbone.vocabulary()
    ids = torch.arange(len(vocabulary), device=backbone.device).unsqueeze(0)
    with torch.no_grad():
        embeddings = backbone.token_embedding(ids)[0]
    n_ctx = ctx.shape[-2]
    print(f"Learned context: {tuple(ctx.shape)} ({'class-specific' if ctx.dim() == 3 else 'shared'})")
    for row, words in enumerate(nearest_words(ctx.to(embeddings.device), embeddings, vocabulary, args.topk)):
        prefix = f"class {row // n_ctx} " if ctx.dim() == 3 else ""
        listed = ", ".join(f"{word} ({dist:.4f})" for word, dist in words)
        print(f"{prefix}ctx {row % n_ctx + 1}: {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
