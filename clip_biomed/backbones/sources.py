"""Where the files of a backbone name come from: the Hugging Face Hub (through its cache) or a directory.

Names (``MODEL.BACKBONE.NAME``):
  ``BiomedCLIP``                  microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224 (open_clip hf-hub)
  ``CLIP`` / ``CLIP:<file>``      OpenAI CLIP ViT-B/16 (open_clip ``ViT-B-16`` + ``openai`` weights)
  ``PubMedCLIP`` / ``PubMedCLIP:<file>``  CLIP ViT-B/32 + PubMedCLIP_ViT32.pth (HF sarahESL/PubMedCLIP)
  ``PMCCLIP``                     PMC-CLIP files of the HF dataset axiong/pmc_oa + PubMedBERT config/tokenizer
  ``BMCCLIP``, ``QuiltNet``, ``MedSigLIP``, ``PubMedCLIP-HF``  newer models (``SHORTCUTS`` below)
  ``hf-hub:<repo id>``            any open_clip model on the hub (open_clip_config.json + weights)
  ``hf:<repo id>``                a transformers CLIPModel / SiglipModel on the hub (config.json + weights)
  ``local-dir:<directory>``       an offline copy in one of the layouts of ``formats.py`` (auto-detected)
  ``<arch>[:<tag>|:<file>]``      an open_clip architecture with a pretrained tag or weights file, e.g.
                                  ``ViT-B-16:openai``; ``ViT-B/16`` (OpenAI spelling) means ``ViT-B-16``.
Hub files that cannot be had raise :class:`ModelNotAvailableError` with the way to provide them.
"""
from __future__ import annotations

import difflib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional, Tuple

import open_clip

from .formats import (HF_CONFIG, OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, PMC_IMAGE_ENCODER, PMC_TEXT_ENCODER,
                      PMC_TEXT_PROJECTION, PREPROCESSOR_CONFIG, PUBMEDCLIP_FILE, TOKENIZER_FILES, TRANSFORMERS_WEIGHTS,
                      VOCAB_FILES, OpenAIFiles, OpenClipFiles, PMCFiles, TransformersFiles, files_from_dir,
                      transformers_weight_files)
from .hub import HubFileUnavailable, ModelNotAvailableError, fetch, fetch_first
from .registry import BackboneCard, get_resolver, list_backbones, register_backbone

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
HF_TRANSFORMERS = "hf:"
BIOMEDCLIP_HUB_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
CLIP_ARCH, CLIP_TAG = "ViT-B-16", "openai"
CLIP_FILE_ARCH = "ViT-B-16-quickgelu"  # an explicit OpenAI ViT-B/16 file needs OpenAI's QuickGELU
PUBMEDCLIP_REPO = "sarahESL/PubMedCLIP"
PMC_REPO = "axiong/pmc_oa"  # a dataset repository on the hub


@contextmanager
def _provided_as(name: str, layout: str):
    """Turn a missing hub file into an error that says how to provide ``name`` offline."""
    try:
        yield
    except HubFileUnavailable as miss:
        raise ModelNotAvailableError(
            f"Backbone {name!r} is not available: {miss}.\n"
            "To use it on a machine without internet access:\n"
            "  1. on a machine with internet access run:\n"
            f"     python -m clip_biomed.backbones download --name {name} --out DIR\n"
            "  2. copy DIR to this machine and set MODEL.BACKBONE.NAME local-dir:DIR\n"
            f"  DIR then holds: {layout}.\n"
            "Or copy a Hugging Face cache (HF_HOME) that holds these files. Details: docs/backbones.md."
        ) from miss


def _fetch_tokenizer(repo_id: str) -> Path:
    """Folder (in the HF cache) holding the tokenizer files of ``repo_id``."""
    found = [p for p in (fetch(repo_id, name, required=False) for name in TOKENIZER_FILES) if p is not None]
    if not any(p.name in VOCAB_FILES for p in found):
        raise HubFileUnavailable(repo_id, " or ".join(VOCAB_FILES), "no tokenizer vocabulary found")
    return found[0].parent


def _hf_text_dirs(model_id: str, tokenizer_id: Optional[str] = None) -> Tuple[Path, Path]:
    """Folders with a HF text tower's config.json and its tokenizer files, as open_clip fetches them."""
    return fetch(model_id, HF_CONFIG).parent, _fetch_tokenizer(tokenizer_id or model_id)


def _open_clip_files(config: dict, weights: Path) -> OpenClipFiles:
    files = OpenClipFiles(config, weights)
    if files.hf_text:
        text_cfg = files.model_cfg["text_cfg"]
        files.text_dir, files.tokenizer_dir = _hf_text_dirs(text_cfg["hf_model_name"],
                                                            text_cfg.get("hf_tokenizer_name"))
    return files


def _hub_open_clip(repo_id: str) -> OpenClipFiles:
    """An open_clip model published on the hub (what ``open_clip.create_model('hf-hub:...')`` reads)."""
    config = json.loads(fetch(repo_id, OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
    if "model_cfg" not in config:
        raise ValueError(f"hf-hub:{repo_id}: {OPEN_CLIP_CONFIG} has no 'model_cfg'; is it an open_clip model?")
    return _open_clip_files(config, fetch_first(repo_id, OPEN_CLIP_WEIGHTS))


def _hub_transformers(repo_id: str) -> TransformersFiles:
    """A transformers CLIPModel / SiglipModel published on the hub (what ``from_pretrained`` reads)."""
    snapshot = fetch(repo_id, HF_CONFIG).parent
    fetch(repo_id, PREPROCESSOR_CONFIG, required=False)
    _fetch_tokenizer(repo_id)
    weights = fetch_first(repo_id, TRANSFORMERS_WEIGHTS)
    if weights.name.endswith(".index.json"):
        for shard in transformers_weight_files(snapshot, weights):
            fetch(repo_id, shard)
    return TransformersFiles.from_dir(snapshot)


def _pretrained_weights(arch: str, tag: str) -> Tuple[Path, dict]:
    """Weights file of an open_clip pretrained tag (from the tag's hub repo) and the tag's config."""
    pretrained_cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not pretrained_cfg:
        raise ValueError(f"{arch!r} has no pretrained tag {tag!r} and no file {tag!r} exists; tags: "
                         f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}")
    if not pretrained_cfg.get("hf_hub"):
        raise ValueError(f"{arch}:{tag} is only published at a URL ({pretrained_cfg.get('url')}); download "
                         f"it yourself and use {arch}:<path to the file>")
    # open_clip's convention: 'org/repo/file' names a file, 'org/repo/' the repo's default weights file
    repo_id, filename = os.path.split(pretrained_cfg["hf_hub"])
    candidates = OPEN_CLIP_WEIGHTS if not filename else (filename,)
    return fetch_first(repo_id, candidates), pretrained_cfg


def _open_clip_arch(arch: str, tag_or_file: Optional[str]) -> OpenClipFiles:
    """An open_clip built-in architecture with a pretrained tag or a weights file."""
    model_cfg = open_clip.get_model_config(arch)
    if Path(tag_or_file).expanduser().is_file():
        weights, pretrained_cfg = Path(tag_or_file).expanduser(), {}
    else:
        weights, pretrained_cfg = _pretrained_weights(arch, tag_or_file)
    if pretrained_cfg.get("quick_gelu"):  # e.g. the openai tags: trained with QuickGELU
        model_cfg["quick_gelu"] = True
    preprocess_cfg = {k: pretrained_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                      if k in pretrained_cfg}
    return _open_clip_files({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, weights)


def _default_tag(arch: str) -> str:
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise ValueError(f"{arch!r} has no pretrained weights in open_clip; name a file: {arch}:<path>")
    return CLIP_TAG if CLIP_TAG in tags else tags[0]


def _existing_file(path: str, name: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotAvailableError(f"{name}: weights file {file} does not exist")
    return file


def _no_argument(name: str, argument: Optional[str]) -> None:
    if argument:
        raise ValueError(f"{name} takes no ':<file>' argument (its weights are several files); "
                         f"use local-dir:<directory> for a local copy (python -m clip_biomed.backbones download)")


# --- the built-in names -------------------------------------------------------------------------
def _hub_model(name: str, card: BackboneCard, repo_id: str, read: Callable[[str], object], layout: str) -> None:
    """Register ``name`` as the model ``read(repo_id)`` returns (one hub repository, no argument)."""
    @register_backbone(name, card)
    def resolver(argument: Optional[str]):
        _no_argument(name, argument)
        with _provided_as(name, layout):
            return read(repo_id)


_hub_model("BiomedCLIP", BackboneCard("biomedclip", f"{HF_HUB}{BIOMEDCLIP_HUB_ID}", 224, "MIT"), BIOMEDCLIP_HUB_ID,
           _hub_open_clip, OpenClipFiles.LAYOUT)


@register_backbone("CLIP", BackboneCard("clip", f"{CLIP_ARCH}:{CLIP_TAG}", 224, "MIT"))
def clip(argument: Optional[str]) -> OpenClipFiles:
    if argument:
        return _open_clip_arch(CLIP_FILE_ARCH, str(_existing_file(argument, "CLIP")))
    with _provided_as("CLIP", OpenClipFiles.LAYOUT):
        return _open_clip_arch(CLIP_ARCH, CLIP_TAG)


@register_backbone("PubMedCLIP", BackboneCard("clip", f"{PUBMEDCLIP_REPO} ({PUBMEDCLIP_FILE})", 224,
                                              "MIT (as its transformers port states)"))
def pubmedclip(argument: Optional[str]) -> OpenAIFiles:
    if argument:
        return OpenAIFiles(_existing_file(argument, "PubMedCLIP"))
    with _provided_as("PubMedCLIP", OpenAIFiles.LAYOUT):
        return OpenAIFiles(fetch(PUBMEDCLIP_REPO, PUBMEDCLIP_FILE))


@register_backbone("PMCCLIP", BackboneCard("pmcclip", f"dataset {PMC_REPO} + {PMCFiles.BERT_HUB_ID}", 224,
                                           "not stated by the dataset repository; check axiong/pmc_oa"))
def pmcclip(argument: Optional[str]) -> PMCFiles:
    _no_argument("PMCCLIP", argument)
    with _provided_as("PMCCLIP", PMCFiles.LAYOUT):
        weights = [fetch(PMC_REPO, name, repo_type="dataset")
                   for name in (PMC_IMAGE_ENCODER, PMC_TEXT_ENCODER, PMC_TEXT_PROJECTION)]
        text_dir, tokenizer_dir = _hf_text_dirs(PMCFiles.BERT_HUB_ID)
        return PMCFiles(*weights, text_dir=text_dir, tokenizer_dir=tokenizer_dir)


# Newer biomedical models that load with stock open_clip / transformers (docs/backbones.md has the sources).
BMCCLIP_REPO, BMCCLIP_FILE, BMCCLIP_ARCH = "BIOMEDICA/BMC_CLIP_CF", "BMC_CLIP_CF.pt", "ViT-L-14"
QUILTNET_REPO = "wisdomik/QuiltNet-B-16"
MEDSIGLIP_REPO = "google/medsiglip-448"
PUBMEDCLIP_HF_REPO = "flaviagiammarino/pubmed-clip-vit-base-patch32"


@register_backbone("BMCCLIP", BackboneCard("clip", f"{BMCCLIP_REPO} ({BMCCLIP_FILE}) on open_clip {BMCCLIP_ARCH}",
                                           224, "MIT"))
def bmcclip(argument: Optional[str]) -> OpenClipFiles:
    _no_argument("BMCCLIP", argument)
    with _provided_as("BMCCLIP", OpenClipFiles.LAYOUT):
        # an open_clip training checkpoint ({"state_dict": {"module.<key>": ...}}) of the built-in ViT-L-14
        return _open_clip_arch(BMCCLIP_ARCH, str(fetch(BMCCLIP_REPO, BMCCLIP_FILE)))


_hub_model("QuiltNet", BackboneCard("clip", f"{HF_HUB}{QUILTNET_REPO}", 224, "MIT"), QUILTNET_REPO,
           _hub_open_clip, OpenClipFiles.LAYOUT)
_hub_model("MedSigLIP", BackboneCard("siglip", f"{HF_TRANSFORMERS}{MEDSIGLIP_REPO}", 448,
                                     "Health AI Developer Foundations terms of use", gated=True,
                                     needs="sentencepiece, protobuf"),
           MEDSIGLIP_REPO, _hub_transformers, TransformersFiles.LAYOUT)
_hub_model("PubMedCLIP-HF", BackboneCard("hf-clip", f"{HF_TRANSFORMERS}{PUBMEDCLIP_HF_REPO}", 224, "MIT"),
           PUBMEDCLIP_HF_REPO, _hub_transformers, TransformersFiles.LAYOUT)


# The adapter families: what each is, the packages it needs (all are requirements of this project) and
# the files a local copy holds.
FAMILIES = {
    "biomedclip": ("open_clip model with a Hugging Face text tower (BERT & co.)", "open_clip_torch, transformers",
                   OpenClipFiles.LAYOUT),
    "clip": ("open_clip model with a CLIP text transformer (any size, e.g. ViT-B/16, ViT-L/14)", "open_clip_torch",
             f"{OpenClipFiles.LAYOUT}; or {OpenAIFiles.LAYOUT}"),
    "pmcclip": ("PMC-CLIP's published files, built as open_clip ModifiedResNet-50 + PubMedBERT",
                "open_clip_torch, transformers", PMCFiles.LAYOUT),
    "hf-clip": ("transformers CLIPModel", "transformers", TransformersFiles.LAYOUT),
    "siglip": ("transformers SiglipModel (sigmoid-trained: logit scale and bias)",
               "transformers, sentencepiece, protobuf", TransformersFiles.LAYOUT),
}
NAME_SCHEMES = {
    f"{HF_HUB}<repo id>": "an open_clip model on the Hugging Face Hub (families biomedclip, clip)",
    f"{HF_TRANSFORMERS}<repo id>": "a transformers CLIPModel / SiglipModel on the Hub (families hf-clip, siglip)",
    f"{LOCAL_DIR}<directory>": "an offline copy in any family's layout (detected from its files)",
    "<arch>[:<tag>|:<file>]": "an open_clip architecture with a pretrained tag or weights file, e.g. ViT-L-14:openai",
}


# Models that stock open_clip / transformers cannot load: named so that asking for one explains why.
NEEDS_OWN_PACKAGE = {
    "UniMedCLIP": ("UniMed-CLIP (UzairK/unimed-clip-vit-b16, CC-BY-NC-4.0) is built with the authors' own fork "
                   "of open_clip (a BiomedBERT text encoder passed as text_encoder_name), which stock open_clip "
                   "cannot build, so it is not supported here"),
    "CONCH": ("CONCH (MahmoodLab/conch, gated, CC-BY-NC-ND-4.0) is a CoCa-style model loaded with its own package "
              "(conch.open_clip_custom), which this project does not depend on, so it is not supported here"),
}


# --- name grammar --------------------------------------------------------------------------------
def _unknown(name: str) -> ValueError:
    candidates = list_backbones() + open_clip.list_models()
    by_lower = {c.lower(): c for c in candidates}
    close = [by_lower[c] for c in difflib.get_close_matches(name.split(":")[0].lower(), list(by_lower), n=4)]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ValueError(f"Unknown backbone {name!r}. Valid names: {', '.join(list_backbones())}, "
                      f"{HF_HUB}<repo id>, {HF_TRANSFORMERS}<repo id>, {LOCAL_DIR}<directory>, or an open_clip architecture "
                      f"<arch>[:<tag>|:<file>] (see open_clip.list_models(), e.g. ViT-B-16:openai).{hint}")


def resolve(name: str):
    """The format record (``formats.py``) of the files of backbone ``name``, downloading if needed."""
    name = name.strip()
    if name.startswith(LOCAL_DIR):
        return files_from_dir(Path(_identifier(name, LOCAL_DIR)).expanduser())
    if name.startswith(HF_HUB):
        with _provided_as(name, OpenClipFiles.LAYOUT):
            return _hub_open_clip(_identifier(name, HF_HUB))
    if name.startswith(HF_TRANSFORMERS):
        with _provided_as(name, TransformersFiles.LAYOUT):
            return _hub_transformers(_identifier(name, HF_TRANSFORMERS))
    base, _, argument = name.partition(":")
    if base in NEEDS_OWN_PACKAGE:
        raise ValueError(f"{NEEDS_OWN_PACKAGE[base]}. Supported backbones: python -m clip_biomed.backbones list")
    resolver = get_resolver(base)
    if resolver is not None:
        return resolver(argument or None)
    arch = base.replace("/", "-")  # OpenAI spelling ViT-B/16 -> open_clip ViT-B-16
    if arch in open_clip.list_models():
        tag_or_file = argument or _default_tag(arch)
        with _provided_as(f"{arch}:{tag_or_file}", OpenClipFiles.LAYOUT):
            return _open_clip_arch(arch, tag_or_file)
    raise _unknown(name)


def _identifier(name: str, prefix: str) -> str:
    identifier = name[len(prefix):].strip()
    if not identifier:
        raise ValueError(f"backbone name {name!r} names nothing after {prefix!r}")
    return identifier
