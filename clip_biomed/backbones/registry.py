"""Named backbones, timm style: ``@register_backbone("Name")`` and ``list_backbones()``.

A registered function takes the optional argument after ``Name:`` (an explicit weights file, for
the names that accept one) and returns the format record of the model's files (``formats.py``),
downloading them into the Hugging Face cache when needed.  ``sources.py`` registers the built-in
names; ``build_backbone`` (``factory.py``) turns a record into a frozen Backbone.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

Resolver = Callable[[Optional[str]], object]
_BACKBONES: Dict[str, Resolver] = {}


def register_backbone(name: str) -> Callable[[Resolver], Resolver]:
    """Decorator registering ``fn(weights_file_or_None) -> files record`` under ``name``."""
    if ":" in name or "/" in name:
        raise ValueError(f"backbone name {name!r} must not contain ':' or '/' (they separate arguments)")

    def decorator(fn: Resolver) -> Resolver:
        if name in _BACKBONES:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    return decorator


def list_backbones() -> List[str]:
    """Registered names (``hf-hub:<id>``, ``local-dir:<path>`` and open_clip names work too)."""
    return sorted(_BACKBONES)


def get_resolver(name: str) -> Optional[Resolver]:
    return _BACKBONES.get(name)
