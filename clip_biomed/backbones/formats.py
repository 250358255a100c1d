"""On-disk formats of backbone weights, and how each becomes a Backbone.

Each format is a small record of file paths with three operations:
  ``from_dir(dir)``  read a local directory (``local-dir:``) laid out as ``LAYOUT`` says;
  ``build(name)``    load an fp32 :class:`OpenClipBackbone` on the CPU;
  ``export(dir)``    write the files into a directory in that layout (the offline copy).
Hub sources (``sources.py``) produce the same records from files in the Hugging Face cache.

Each record also knows the model's image preprocessing (``preprocess``) from its files, without
building the model, so the data pipeline can follow it before the model is loaded.

The first three end up as a stock open_clip ``CustomTextCLIP`` (``open_clip_backbone.py``):
  OpenClipFiles  open_clip's own format (BiomedCLIP and any ``hf-hub:`` open_clip model, CLIP);
  OpenAIFiles    an OpenAI-CLIP state dict file (PubMedCLIP's ``PubMedCLIP_ViT32.pth``);
  PMCFiles       the three files PMC-CLIP publishes: ModifiedResNet-50 state dict, PubMedBERT state
                 dict and the text projection matrix, plus PubMedBERT's config.json and tokenizer.
TransformersFiles is a Hugging Face transformers ``CLIPModel`` / ``SiglipModel`` folder
(``transformers_backbone.py``).
Weights are read with ``torch.load(weights_only=True)`` or safetensors, never unpickled.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import pickle
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import open_clip
import torch
from open_clip.model import convert_to_custom_text_state_dict
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

from . import micro_vit  # noqa: F401  (registers the timm model that tiny directories name)
from .base import PreprocessInfo
from .hub import ModelNotAvailableError
from .open_clip_backbone import OpenClipBackbone
from .transformers_backbone import TRANSFORMERS_FAMILIES, TransformersBackbone

OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
HF_CONFIG = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
PUBMEDCLIP_FILE = "PubMedCLIP_ViT32.pth"
PUBMEDCLIP_PATTERN = "PubMedCLIP_*.pth"  # also the RN50 / RN50x4 variants of the same repository
PMC_IMAGE_ENCODER = "image_encoder(resnet50).pth"
PMC_TEXT_ENCODER = "text_encoder.pth"
PMC_TEXT_PROJECTION = "text_projection_layer.pth"
PMC_CONFIG = "pmc_clip_config.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
# a transformers checkpoint: one file, or an index naming its shards
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")
# PMC-CLIP as BiomedCoOp builds it (clip/pmcclip.py + trainers): RN50 layout, BERT context 77, and
# the constant logit scale exp(4.4292).  pmc_clip_config.json may override any of these (tiny models).
PMC_ARCH = {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "heads": 8, "context_length": 77,
            "log_logit_scale": 4.4292}
OPENAI_HEAD_WIDTH = 64  # OpenAI CLIP state dicts carry no head count; all OpenAI CLIPs use 64-wide heads
# open_clip renamed these text_cfg keys (late 2023); copies of BiomedCLIP saved before still use the old ones
LEGACY_HF_TEXT_KEYS = {"proj": "hf_proj_type", "pooler_type": "hf_pooler_type"}


# --- shared helpers ------------------------------------------------------------------------------
def instantiate(model_cfg: dict, text_dir: Optional[Path] = None) -> torch.nn.Module:
    """A random ``open_clip.CustomTextCLIP`` from an open_clip model config, built offline.

    A Hugging Face text tower is built from ``text_dir/config.json`` (whatever ``hf_model_name``
    says), and no tower downloads pretrained weights: the weights come from the checkpoint.
    """
    cfg = copy.deepcopy(model_cfg)
    cfg.pop("custom_text", None)  # every family is built as CustomTextCLIP (one `text` module)
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models (multimodal_cfg) are not supported as prompt-learning backbones")
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_name"] = str(text_dir)
        text_cfg["hf_model_pretrained"] = False
        for old, new in LEGACY_HF_TEXT_KEYS.items():
            if old in text_cfg:
                text_cfg.setdefault(new, text_cfg.pop(old))
    if vision_cfg.get("timm_model_name"):
        vision_cfg["timm_model_pretrained"] = False
    return open_clip.CustomTextCLIP(**cfg)


@functools.lru_cache(maxsize=None)
def _clip_bpe_tokenizer(context_length: int) -> SimpleTokenizer:
    return SimpleTokenizer(context_length=context_length)  # reading the BPE merges takes ~0.3 s


def _tokenizer(text_cfg: dict, tokenizer_dir: Optional[Path]):
    context_length = text_cfg.get("context_length", 77)
    kwargs = dict(text_cfg.get("tokenizer_kwargs") or {})
    if text_cfg.get("hf_model_name"):
        if text_cfg.get("tokenizer_mode"):  # only newer open_clip versions know this argument
            kwargs["tokenizer_mode"] = text_cfg["tokenizer_mode"]
        return HFTokenizer(str(tokenizer_dir), context_length=context_length, **kwargs)
    if text_cfg.get("hf_tokenizer_name"):  # open_clip would use it; the CLIP BPE would give wrong ids
        raise ValueError(f"the model's OpenAI-CLIP-style text tower uses the Hugging Face tokenizer "
                         f"{text_cfg['hf_tokenizer_name']}, which is supported only with a Hugging Face text tower; "
                         "choose a model whose text tower uses the CLIP BPE (e.g. CLIP, ViT-B-16:openai)")
    return SimpleTokenizer(context_length=context_length, **kwargs) if kwargs else _clip_bpe_tokenizer(context_length)


def _square_size(size, what: str) -> int:
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"{what}: non-square image size {tuple(size)} is not supported")
        size = size[0]
    return int(size)


def open_clip_preprocess(model_cfg: dict, preprocess_cfg: dict) -> PreprocessInfo:
    """Image size (the config's ``vision_cfg.image_size``, open_clip's default 224) and normalisation
    (``preprocess_cfg``, default OpenAI's) of an open_clip model, read from its config alone."""
    return PreprocessInfo(size=_square_size(model_cfg["vision_cfg"].get("image_size", 224), "open_clip model"),
                          mean=tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                          std=tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
                          interpolation=preprocess_cfg.get("interpolation", "bicubic"))


@contextmanager
def _loading(path: Path):
    """Turn the errors of reading/loading a weights file into messages that name the fix."""
    try:
        yield
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects besides tensors, so it is not loaded: torch.load(weights_only=True) "
            "refuses it (unpickling can run arbitrary code). If you trust the file, convert it once into a "
            f"plain state dict and keep the file name: python -c \"import torch; c = torch.load('{path}', "
            f"weights_only=False); torch.save(c.get('state_dict', c) if isinstance(c, dict) else c, '{path}')\""
        ) from err
    except RuntimeError as err:  # load_state_dict: missing/unexpected keys, shape mismatch
        if "TorchScript" in str(err):  # torch.load(weights_only=True) refuses TorchScript archives
            raise ValueError(
                f"{path} is a TorchScript archive (as OpenAI's clip.load downloads are), so it is not loaded: "
                "loading it runs the code it holds. If you trust the file, convert it once into a plain state dict "
                f"and keep the file name: python -c \"import torch; sd = torch.jit.load('{path}', map_location='cpu')"
                ".state_dict(); [sd.pop(k, None) for k in ('input_resolution', 'context_length', 'vocab_size')]; "
                f"torch.save(sd, '{path}')\""
            ) from err
        raise ValueError(f"the weights in {path} do not fit the architecture they were loaded into; "
                         f"is the file complete and the right one? ({err})") from err


def read_weights(path: Path):
    """A state dict or tensor from ``path``; ``{'state_dict': sd}`` wrappers and ``module.`` prefixes go."""
    with _loading(path):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}  # saved from DataParallel
    return obj


def _load_strict(model: torch.nn.Module, state_dict: dict, path: Path) -> None:
    # buffers older transformers versions saved and newer ones no longer keep
    expected = model.state_dict().keys()
    stale = [k for k in state_dict if k not in expected and k.endswith((".position_ids", ".token_type_ids"))]
    with _loading(path):
        model.load_state_dict({k: v for k, v in state_dict.items() if k not in stale}, strict=True)


def place(source: Path, target: Path) -> None:
    """Put a copy of ``source`` at ``target`` (a hard link when possible: hub caches are large)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if target.resolve() == source.resolve():  # exporting a directory onto itself
            return
        target.unlink()
    try:
        os.link(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)


def _require(directory: Path, names, what: str, fix: str) -> Path:
    """The first of ``names`` present in ``directory``, or an error that says what to add."""
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise ModelNotAvailableError(f"{directory} has no {what} ({' or '.join(names)}). {fix}")


def _require_text_files(directory: Path, hub_id: str) -> None:
    fix = (f"Copy them from the Hugging Face repository {hub_id}, e.g. `hf download {hub_id} "
           f"config.json vocab.txt --local-dir {directory}`, or prepare the whole "
           "directory with `python -m clip_biomed.backbones download` (docs/backbones.md).")
    _require(directory, (HF_CONFIG,), "Hugging Face config.json of the text tower", fix)
    _require(directory, VOCAB_FILES, "tokenizer vocabulary", fix)


def _export_text_files(text_dir: Path, tokenizer_dir: Path, out: Path) -> None:
    place(text_dir / HF_CONFIG, out / HF_CONFIG)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            place(tokenizer_dir / name, out / name)


def write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- the formats ---------------------------------------------------------------------------------
@dataclass
class OpenClipFiles:
    """open_clip format: ``open_clip_config.json`` ({"model_cfg", "preprocess_cfg"}) + one weights file."""

    LAYOUT = ("open_clip_config.json + open_clip_pytorch_model.bin (or open_clip_model.safetensors); "
              "with a Hugging Face text tower (BiomedCLIP) also that tower's config.json and its tokenizer "
              "files (vocab.txt or tokenizer.json, + tokenizer_config.json if there is one)")

    config: dict
    weights: Path
    text_dir: Optional[Path] = None       # holds the HF text tower's config.json
    tokenizer_dir: Optional[Path] = None  # holds the HF tokenizer files

    @property
    def model_cfg(self) -> dict:
        return self.config["model_cfg"]

    @property
    def hf_text(self) -> bool:
        return bool(self.model_cfg["text_cfg"].get("hf_model_name"))

    @property
    def family(self) -> str:
        return "biomedclip" if self.hf_text else "clip"

    @property
    def preprocess(self) -> PreprocessInfo:
        return open_clip_preprocess(self.model_cfg, self.config.get("preprocess_cfg", {}))

    @staticmethod
    def matches(directory: Path) -> bool:
        return (directory / OPEN_CLIP_CONFIG).is_file()

    @classmethod
    def from_dir(cls, directory: Path) -> "OpenClipFiles":
        config = json.loads((directory / OPEN_CLIP_CONFIG).read_text(encoding="utf-8"))
        if "model_cfg" not in config:  # a bare model config, as in open_clip's model_configs/
            config = {"model_cfg": config, "preprocess_cfg": {}}
        weights = _require(directory, OPEN_CLIP_WEIGHTS, "open_clip weights file",
                           "Copy the weights file of the model next to open_clip_config.json.")
        files = cls(config, weights)
        if files.hf_text:
            # the config names the text tower by hub id; offline, config and tokenizer come from here
            _require_text_files(directory, files.model_cfg["text_cfg"]["hf_model_name"])
            files.text_dir = files.tokenizer_dir = directory
        return files

    def build(self, name: str) -> OpenClipBackbone:
        text_cfg = self.model_cfg["text_cfg"]
        tokenizer = _tokenizer(text_cfg, self.tokenizer_dir)  # before the weights: it may refuse the model
        model = instantiate(self.model_cfg, self.text_dir)
        with _loading(self.weights):
            open_clip.load_checkpoint(model, str(self.weights), strict=True, weights_only=True)
        return OpenClipBackbone.wrap(model, tokenizer, name=name,
                                     family=self.family, context_length=text_cfg.get("context_length", 77),
                                     preprocess=self.preprocess)

    def export(self, out: Path) -> None:
        write_json(self.config, out / OPEN_CLIP_CONFIG)
        # a weights file named otherwise (BMC_CLIP_CF.pt, a CLIP:<file>) gets a name local-dir: reads
        name = self.weights.name
        if name not in OPEN_CLIP_WEIGHTS:
            name = OPEN_CLIP_WEIGHTS[0] if self.weights.suffix == ".safetensors" else "open_clip_pytorch_model.bin"
        place(self.weights, out / name)
        if self.hf_text:
            _export_text_files(self.text_dir, self.tokenizer_dir, out)


@dataclass
class OpenAIFiles:
    """An OpenAI-CLIP state dict (optionally under a ``state_dict`` key), e.g. PubMedCLIP_ViT32.pth."""

    LAYOUT = "PubMedCLIP_ViT32.pth (an OpenAI-CLIP-format state dict; ViT or ModifiedResNet image tower)"
    family = "clip"

    weights: Path

    @staticmethod
    def matches(directory: Path) -> bool:
        return any(directory.glob(PUBMEDCLIP_PATTERN))

    @classmethod
    def from_dir(cls, directory: Path) -> "OpenAIFiles":
        found = sorted(directory.glob(PUBMEDCLIP_PATTERN))
        if len(found) != 1:
            raise ValueError(f"{directory} holds {len(found)} files {PUBMEDCLIP_PATTERN} "
                             f"({', '.join(p.name for p in found)}); keep exactly one per directory")
        return cls(found[0])

    @functools.cached_property
    def state_dict(self) -> dict:
        """The file's state dict (read once: the image size is read off it before the model is built)."""
        state_dict = read_weights(self.weights)
        for jit_only_key in ("input_resolution", "context_length", "vocab_size"):
            state_dict.pop(jit_only_key, None)
        return state_dict

    @property
    def preprocess(self) -> PreprocessInfo:
        return open_clip_preprocess(openai_model_cfg(self.state_dict), {})

    def build(self, name: str) -> OpenClipBackbone:
        model_cfg = openai_model_cfg(self.state_dict)
        model = instantiate(model_cfg)
        _load_strict(model, convert_to_custom_text_state_dict(self.state_dict), self.weights)
        context_length = model_cfg["text_cfg"]["context_length"]
        return OpenClipBackbone.wrap(model, _clip_bpe_tokenizer(context_length), name=name, family=self.family,
                                     context_length=context_length, preprocess=self.preprocess)

    def export(self, out: Path) -> None:
        place(self.weights, out / self.weights.name)


def _count_blocks(state_dict: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def openai_model_cfg(state_dict: dict) -> dict:
    """The open_clip model config of an OpenAI-CLIP state dict, read off the tensor shapes."""
    if "visual.proj" in state_dict:  # ViT image tower
        conv1 = state_dict["visual.conv1.weight"]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = {"layers": _count_blocks(state_dict, "visual.transformer.resblocks."),
                      "width": conv1.shape[0], "patch_size": conv1.shape[-1], "image_size": conv1.shape[-1] * grid}
    else:  # ModifiedResNet image tower
        grid = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_cfg = {"layers": [_count_blocks(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4)],
                      "width": state_dict["visual.layer1.0.conv1.weight"].shape[0], "image_size": grid * 32}
    vision_cfg["head_width"] = OPENAI_HEAD_WIDTH
    text_width = state_dict["ln_final.weight"].shape[0]
    text_cfg = {"context_length": state_dict["positional_embedding"].shape[0],
                "vocab_size": state_dict["token_embedding.weight"].shape[0],
                "width": text_width, "heads": text_width // OPENAI_HEAD_WIDTH,
                "layers": _count_blocks(state_dict, "transformer.resblocks.")}
    return {"embed_dim": state_dict["text_projection"].shape[1], "quick_gelu": True,  # OpenAI CLIPs use QuickGELU
            "vision_cfg": vision_cfg, "text_cfg": text_cfg}


@dataclass
class PMCFiles:
    """PMC-CLIP as published in the HF dataset axiong/pmc_oa, plus PubMedBERT's config and tokenizer."""

    LAYOUT = (f"{PMC_IMAGE_ENCODER} + {PMC_TEXT_ENCODER} + {PMC_TEXT_PROJECTION} + config.json and vocab.txt "
              "(+ tokenizer_config.json if it has one) of microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract "
              f"(+ optional {PMC_CONFIG} for a non-standard architecture)")
    BERT_HUB_ID = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    family = "pmcclip"

    image_encoder: Path
    text_encoder: Path
    text_projection: Path
    text_dir: Path       # config.json of the PubMedBERT text tower
    tokenizer_dir: Path  # its tokenizer files
    arch: Dict = field(default_factory=lambda: dict(PMC_ARCH))

    @staticmethod
    def matches(directory: Path) -> bool:
        return (directory / PMC_TEXT_PROJECTION).is_file()

    @classmethod
    def from_dir(cls, directory: Path) -> "PMCFiles":
        fix = "PMC-CLIP's files are published in the Hugging Face dataset axiong/pmc_oa."
        files = [_require(directory, (name,), "PMC-CLIP weights file", fix)
                 for name in (PMC_IMAGE_ENCODER, PMC_TEXT_ENCODER, PMC_TEXT_PROJECTION)]
        _require_text_files(directory, cls.BERT_HUB_ID)
        arch = dict(PMC_ARCH)
        if (directory / PMC_CONFIG).is_file():
            arch.update(json.loads((directory / PMC_CONFIG).read_text(encoding="utf-8")))
        return cls(*files, text_dir=directory, tokenizer_dir=directory, arch=arch)

    @property
    def preprocess(self) -> PreprocessInfo:
        return open_clip_preprocess({"vision_cfg": {"image_size": self.arch["image_size"]}}, {})

    def build(self, name: str) -> OpenClipBackbone:
        projection = read_weights(self.text_projection)
        if not (isinstance(projection, torch.Tensor) and projection.dim() == 2):
            raise ValueError(f"{self.text_projection} should hold one [text_width, embed_dim] tensor")
        arch = self.arch
        model_cfg = {
            "embed_dim": projection.shape[1],
            "init_logit_scale": arch["log_logit_scale"],
            "vision_cfg": {"layers": arch["layers"], "width": arch["width"], "image_size": arch["image_size"],
                           "head_width": arch["width"] * 32 // arch["heads"]},  # open_clip: heads = width*32/head_width
            # pooler_output @ projection == open_clip's cls_pooler + bias-free linear projection
            "text_cfg": {"hf_model_name": str(self.text_dir), "hf_tokenizer_name": str(self.tokenizer_dir),
                         "hf_pooler_type": "cls_pooler", "hf_proj_type": "linear",
                         "context_length": arch["context_length"]},
        }
        model = instantiate(model_cfg, self.text_dir)
        state_dict = {"text.proj.weight": projection.t(), "logit_scale": torch.tensor(arch["log_logit_scale"])}
        state_dict.update({f"visual.{k}": v for k, v in read_weights(self.image_encoder).items()})
        state_dict.update({f"text.transformer.{k}": v for k, v in read_weights(self.text_encoder).items()})
        _load_strict(model, state_dict, self.text_encoder.parent)
        return OpenClipBackbone.wrap(model, _tokenizer(model_cfg["text_cfg"], self.tokenizer_dir), name=name,
                                     family=self.family, context_length=arch["context_length"],
                                     preprocess=self.preprocess)

    def export(self, out: Path) -> None:
        for path, name in ((self.image_encoder, PMC_IMAGE_ENCODER), (self.text_encoder, PMC_TEXT_ENCODER),
                           (self.text_projection, PMC_TEXT_PROJECTION)):
            place(path, out / name)
        _export_text_files(self.text_dir, self.tokenizer_dir, out)
        if self.arch != PMC_ARCH:
            write_json(self.arch, out / PMC_CONFIG)


# PIL resample codes in preprocessor_config.json -> INPUT.INTERPOLATION (the ones the data pipeline has)
RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
# the processors' defaults when preprocessor_config.json is absent (transformers' CLIP/SigLIP image processors)
TRANSFORMERS_PREPROCESS_DEFAULTS = {
    "clip": {"image_mean": list(open_clip.OPENAI_DATASET_MEAN), "image_std": list(open_clip.OPENAI_DATASET_STD),
             "resample": 3},
    "siglip": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2},
}


def transformers_weight_files(directory: Path, index: Path) -> list:
    """The shard files a ``*.index.json`` names (relative to ``directory``)."""
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    return sorted(set(weight_map.values()))


@dataclass
class TransformersFiles:
    """A transformers ``CLIPModel`` / ``SiglipModel`` folder: config, weights, tokenizer, preprocessor."""

    LAYOUT = ("config.json (model_type clip or siglip) + model.safetensors (or pytorch_model.bin, or a "
              "*.index.json with its shards) + the tokenizer files (CLIP: vocab.json, merges.txt; SigLIP: "
              "spiece.model; + tokenizer_config.json) + preprocessor_config.json (optional)")

    directory: Path  # a local copy or a snapshot folder of the Hugging Face cache

    @property
    def config(self) -> dict:
        return json.loads((self.directory / HF_CONFIG).read_text(encoding="utf-8"))

    @property
    def model_type(self) -> str:
        return self.config.get("model_type", "")

    @property
    def family(self) -> str:
        return TRANSFORMERS_FAMILIES[self.model_type]

    @property
    def preprocess(self) -> PreprocessInfo:
        processor = dict(TRANSFORMERS_PREPROCESS_DEFAULTS[self.model_type])
        if (self.directory / PREPROCESSOR_CONFIG).is_file():
            processor.update(json.loads((self.directory / PREPROCESSOR_CONFIG).read_text(encoding="utf-8")))
        resample = processor["resample"]
        if resample not in RESAMPLE_NAMES:
            raise ValueError(f"{self.directory / PREPROCESSOR_CONFIG} resizes with PIL resample={resample}, which "
                             f"the data pipeline does not offer ({', '.join(RESAMPLE_NAMES.values())}); set "
                             "INPUT.FOLLOW_BACKBONE False and choose INPUT.INTERPOLATION yourself")
        # the size the position embeddings were trained at (the processor resizes to it)
        size = self.config.get("vision_config", {}).get("image_size", 224)
        return PreprocessInfo(size=_square_size(size, str(self.directory)), mean=tuple(processor["image_mean"]),
                              std=tuple(processor["image_std"]), interpolation=RESAMPLE_NAMES[resample],
                              resizable=True)

    @staticmethod
    def matches(directory: Path) -> bool:
        return (directory / HF_CONFIG).is_file()

    @classmethod
    def from_dir(cls, directory: Path) -> "TransformersFiles":
        files = cls(directory)
        if files.model_type not in TRANSFORMERS_FAMILIES:
            raise ModelNotAvailableError(
                f"{directory}/config.json describes a transformers {files.model_type or 'model without model_type'}, "
                f"not a supported dual encoder (model_type {' or '.join(TRANSFORMERS_FAMILIES)}); supported layouts: "
                "docs/backbones.md")
        fix = "Copy the files of the Hugging Face repository (`hf download <repo id> --local-dir DIR`)."
        weights = _require(directory, TRANSFORMERS_WEIGHTS, "transformers weights file", fix)
        if weights.name.endswith(".index.json"):
            for shard in transformers_weight_files(directory, weights):
                _require(directory, (shard,), f"weights shard named by {weights.name}", fix)
        _require(directory, VOCAB_FILES, "tokenizer vocabulary", fix)
        return files

    def build(self, name: str) -> TransformersBackbone:
        from transformers import AutoTokenizer, CLIPModel, SiglipModel

        if self.model_type == "siglip" and not (self.directory / "tokenizer.json").is_file():
            try:
                import sentencepiece  # noqa: F401  (SiglipTokenizer reads spiece.model with it)
            except ImportError as err:
                raise ImportError(f"{name}: the SigLIP tokenizer needs the sentencepiece package: "
                                  "pip install sentencepiece protobuf") from err
        tokenizer = AutoTokenizer.from_pretrained(str(self.directory), local_files_only=True)
        model_class = {"clip": CLIPModel, "siglip": SiglipModel}[self.model_type]
        model = model_class.from_pretrained(str(self.directory), local_files_only=True).float()
        return TransformersBackbone(model, tokenizer, name=name, preprocess=self.preprocess)

    def export(self, out: Path) -> None:
        for path in sorted(self.directory.iterdir()):
            if path.is_file() and path.name in self.needed_files():
                place(path, out / path.name)

    def needed_files(self) -> set:
        names = {HF_CONFIG, PREPROCESSOR_CONFIG, *TOKENIZER_FILES, "added_tokens.json"}
        for weights in TRANSFORMERS_WEIGHTS:
            if (self.directory / weights).is_file():
                names.add(weights)
                if weights.endswith(".index.json"):
                    names.update(transformers_weight_files(self.directory, self.directory / weights))
                break
        return names


FORMATS = (OpenClipFiles, PMCFiles, OpenAIFiles, TransformersFiles)


def files_from_dir(directory: Path):
    """The format record of a local directory, detected from the files it holds."""
    if not directory.is_dir():
        raise ModelNotAvailableError(f"local-dir: {directory} is not a directory")
    for fmt in FORMATS:
        if fmt.matches(directory):
            return fmt.from_dir(directory)
    layouts = "\n".join(f"  - {fmt.LAYOUT}" for fmt in FORMATS)
    raise ModelNotAvailableError(f"local-dir: {directory} holds no model in a known layout. One of:\n{layouts}\n"
                                 "See docs/backbones.md or `python -m clip_biomed.backbones download`.")
