"""Named backbones, timm style: ``@register_backbone("Name", card)`` and ``list_backbones()``.

A registered function takes the optional argument after ``Name:`` (an explicit weights file, for
the names that accept one) and returns the format record of the model's files (``formats.py``),
downloading them into the Hugging Face cache when needed.  ``sources.py`` registers the built-in
names with a :class:`BackboneCard` (what the model is and what it needs, shown by
``python -m clip_biomed.backbones list``); ``build_backbone`` (``factory.py``) turns a record into a
frozen Backbone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

Resolver = Callable[[Optional[str]], object]
_BACKBONES: Dict[str, Resolver] = {}
_CARDS: Dict[str, "BackboneCard"] = {}


@dataclass(frozen=True)
class BackboneCard:
    """The facts a user needs before choosing a named backbone."""

    family: str          # the adapter family (base.Backbone.family)
    source: str          # where the weights come from (hub id, file)
    image_size: int
    licence: str
    gated: bool = False  # the hub asks you to accept terms (and log in) before downloading
    needs: str = ""      # packages beyond the project's own requirements, if any


def register_backbone(name: str, card: Optional[BackboneCard] = None) -> Callable[[Resolver], Resolver]:
    """Decorator registering ``fn(weights_file_or_None) -> files record`` under ``name``."""
    if ":" in name or "/" in name:
        raise ValueError(f"backbone name {name!r} must not contain ':' or '/' (they separate arguments)")

    def decorator(fn: Resolver) -> Resolver:
        if name in _BACKBONES:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _BACKBONES[name] = fn
        if card is not None:
            _CARDS[name] = card
        return fn

    return decorator


def list_backbones() -> List[str]:
    """Registered names (``hf-hub:<id>``, ``hf:<id>``, ``local-dir:<path>`` and open_clip names work too)."""
    return sorted(_BACKBONES)


def get_resolver(name: str) -> Optional[Resolver]:
    return _BACKBONES.get(name)


def backbone_card(name: str) -> Optional[BackboneCard]:
    return _CARDS.get(name)
