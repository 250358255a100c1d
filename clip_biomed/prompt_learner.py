"""The CoOp prompt learner shared by every prompt-learning method, written once for all backbones.

A prompt for class ``c`` is the token sequence ``[START] ctx_1 .. ctx_n <class name> . [END] pad..``;
the context vectors ``ctx`` are the only trainable tensor.  The start token is at position 0 for every
backbone family, so the context always occupies positions ``1..n_ctx`` of the tokenised template.
With a ``template`` (Biomed-DPT's clinical sentences, e.g. ``"a MR photo of a {} in the brain."``)
the prompt is that sentence with its first ``n_ctx`` tokens replaced by the context.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from clip_biomed.backbones.base import Backbone

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
UNCOVERED_INITS = ("random", "zeros")


def _placeholder_prefix(n: int) -> str:
    # "X" is one token in both the BERT word-piece and the CLIP BPE vocabulary.
    return " ".join(["X"] * n)


class PromptLearner(nn.Module):
    """Learnable context vectors and the assembly of per-class prompt embeddings.

    Args:
        backbone: the frozen backbone (used for tokenising and word embeddings only).
        classnames: class names in label order; ``_`` is read as a space.
        n_ctx: number of context vectors.
        ctx_init: words whose embeddings initialise the context.  When they make ``k <= n_ctx``
            tokens, the last ``k`` context vectors start from them and the first ``n_ctx - k`` are
            random N(0, 0.02^2); more than ``n_ctx`` tokens is an error.  Empty means all random.
        csc: class-specific context (one set of vectors per class) instead of a shared one.
        class_token_position: ``end``, ``middle`` or ``front``.
        uncovered_init: how the ``n_ctx - k`` vectors that ``ctx_init`` does not cover start:
            ``random`` N(0, 0.02^2) (CoOp) or ``zeros`` (ProGrad's published initialisation).
        template: a sentence with one ``{}`` for the class name; its first ``n_ctx`` tokens (which
            must all come before the ``{}``) are replaced by the context.  Empty: CoOp's
            ``"<n_ctx tokens> {}."``.  With a template, a CTX_INIT longer than ``n_ctx`` tokens
            initialises the context from its first ``n_ctx`` tokens (as Biomed-DPT does).
        move_one_token: ``middle``/``front`` move the single token after the context instead of the
            class name's tokens (the published code's ``name_lens`` was always 1).
    """

    def __init__(
        self,
        backbone: Backbone,
        classnames: Sequence[str],
        n_ctx: int = 4,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
        uncovered_init: str = "random",
        template: str = "",
        move_one_token: bool = False,
    ):
        super().__init__()
        if uncovered_init not in UNCOVERED_INITS:
            raise ValueError(f"uncovered_init must be one of {UNCOVERED_INITS}, got {uncovered_init!r}")
        if class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ValueError(
                f"CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, got {class_token_position!r}"
            )
        if n_ctx < 1:
            raise ValueError(f"N_CTX must be >= 1, got {n_ctx}")
        self.classnames = [name.replace("_", " ") for name in classnames]
        self.n_cls = len(self.classnames)
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init.replace("_", " ").strip()
        self.csc = csc
        self.class_token_position = class_token_position

        device = backbone.device
        ctx = torch.empty(self.n_cls if csc else 1, n_ctx, backbone.ctx_dim, device=device)
        nn.init.normal_(ctx, std=0.02)
        n_init = backbone.num_tokens(self.ctx_init) if self.ctx_init else 0
        if template:
            n_init = min(n_init, n_ctx)
        if n_init > n_ctx:
            raise ValueError(
                f"CTX_INIT {self.ctx_init!r} is {n_init} tokens for this backbone but N_CTX is {n_ctx}: "
                f"set N_CTX to at least {n_init} or shorten CTX_INIT"
            )
        prefix = " ".join(filter(None, [_placeholder_prefix(n_ctx - n_init), self.ctx_init]))
        if n_init:
            with torch.no_grad():
                init_ids = backbone.tokenize([prefix]).to(device)
                init_embeds = backbone.token_embedding(init_ids)[0, 1 : 1 + n_ctx]
                ctx[:, n_ctx - n_init :] = init_embeds[n_ctx - n_init :].to(ctx.dtype)
                if uncovered_init == "zeros":
                    ctx[:, : n_ctx - n_init] = 0.0
        self.ctx = nn.Parameter(ctx if csc else ctx[0])
        self.prompt_prefix = prefix

        # middle/front move the class name's tokens, which start `name_start` tokens after the context
        # (or, as published, the one token right after the context)
        if template:
            if template.count("{}") != 1:
                raise ValueError(f"a prompt template needs exactly one {{}} for the class name, got {template!r}")
            before_name = backbone.num_tokens(template.split("{}")[0])
            if before_name < n_ctx:
                raise ValueError(f"the template {template!r} has {before_name} tokens before the class name but N_CTX "
                                 f"is {n_ctx}: the context would replace class-name tokens; lower N_CTX or lengthen "
                                 "the template")
            prompts = [template.format(name) for name in self.classnames]
            self.name_start = 0 if move_one_token else before_name - n_ctx
        else:
            prompts = [f"{prefix} {name}." for name in self.classnames]
            self.name_start = 0
        self.template = template
        self.name_lens: List[int] = [1 if move_one_token else backbone.num_tokens(name) for name in self.classnames]
        ids = backbone.tokenize(prompts).to(device)
        with torch.no_grad():
            embedding = backbone.token_embedding(ids)
        # Constant parts of every prompt: not trained, not saved (rebuilt for the current classes, which
        # is what lets a context trained on base classes be evaluated on new ones).
        self.register_buffer("tokenized_prompts", ids, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :], persistent=False)
        self.metadata: Dict = {}

    def forward(self, ctx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Prompt embeddings ``[n_cls, L, ctx_dim]``, laid out like ``tokenized_prompts``.

        ``ctx``: context vectors to use instead of ``self.ctx`` (same shape), e.g. CoCoOp's context
        shifted for one image.
        """
        ctx = self.ctx if ctx is None else ctx
        ctx = ctx if self.csc else ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prefix, suffix = self.token_prefix, self.token_suffix
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        # Rebuild each prompt with the class tokens moved; sequence length stays the same because
        # the same tokens are only reordered.
        rows = []
        half = self.n_ctx // 2
        start = self.name_start
        for i, name_len in enumerate(self.name_lens):
            row = suffix[i : i + 1]
            class_tokens = row[:, start : start + name_len]
            rest = torch.cat([row[:, :start], row[:, start + name_len :]], dim=1)
            ctx_i = ctx[i : i + 1]
            if self.class_token_position == "middle":
                parts = [prefix[i : i + 1], ctx_i[:, :half], class_tokens, ctx_i[:, half:], rest]
            else:  # front
                parts = [prefix[i : i + 1], class_tokens, ctx_i, rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    @property
    def token_ids(self) -> torch.Tensor:
        """Token ids matching :meth:`forward`'s layout (padding/EOT positions are what matter)."""
        return self.tokenized_prompts

    # The checkpoint carries what is needed to use the context without the training run.
    def get_extra_state(self):
        return {
            "classnames": list(self.classnames),
            "n_ctx": self.n_ctx,
            "ctx_init": self.ctx_init,
            "csc": self.csc,
            "class_token_position": self.class_token_position,
            **({"template": self.template} if self.template else {}),
            **self.metadata,
        }

    def set_extra_state(self, state):
        self.loaded_metadata = dict(state)


def context_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The learned context from our checkpoints, CoOp-style ones or the published full-model ones."""
    for key in ("ctx", "prompt_learner.ctx", "module.prompt_learner.ctx"):
        if key in state_dict:
            kept = {"ctx": state_dict[key]}
            if "_extra_state" in state_dict:
                kept["_extra_state"] = state_dict["_extra_state"]
            return kept
    sample = ", ".join(list(state_dict)[:8])
    raise KeyError(f"No learned context in this checkpoint (expected key 'ctx' or 'prompt_learner.ctx'; found {sample} ...)")
