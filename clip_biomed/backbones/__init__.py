"""Vision-language backbones behind one interface (:class:`Backbone`), built by name.

    from clip_biomed.backbones import build_backbone
    backbone = build_backbone("BiomedCLIP")                      # hub (or its local cache)
    backbone = build_backbone("local-dir:/models/biomedclip")    # an offline copy
    backbone = build_backbone("PubMedCLIP", device="cuda", precision="fp16")

Names, offline use and tiny test models: docs/backbones.md.  Command line:
``python -m clip_biomed.backbones {list,download,tiny}``.
"""
from .base import Backbone, PreprocessInfo
from .factory import backbone_files, build_backbone, download_backbone
from .hub import ModelNotAvailableError
from .registry import list_backbones, register_backbone  # names are registered in sources.py

__all__ = ["Backbone", "PreprocessInfo", "backbone_files", "build_backbone", "download_backbone", "list_backbones",
           "register_backbone", "ModelNotAvailableError"]
