"""Tiny models written in the same on-disk layout a real offline copy uses: random, or aligned.

``python -m clip_biomed.backbones tiny --family {biomedclip,clip,pubmedclip,pmcclip,hf-clip,siglip} --out DIR``
writes one; ``MODEL.BACKBONE.NAME local-dir:DIR`` then runs exactly the code path of the real
model (format detection, config rewriting, weight loading, tokenizers), in well under a second
on a CPU.  The weights are random: the outputs mean nothing.  With ``--align-to ROOT/NAME``
(:func:`align_tiny`) the random model is then contrastively pre-trained on a dataset
(``align.py``) and the trained weights are written back into the same files, so it classifies
that dataset zero-shot.

| family     | layout (as the real model)                 | image tower                | text tower                 |
|------------|--------------------------------------------|----------------------------|----------------------------|
| biomedclip | open_clip_config.json + .bin + BERT files  | timm micro ViT, 32 px      | BERT 2x64, context 256     |
| clip       | open_clip_config.json + .safetensors       | open_clip ViT 2x64, 32 px  | CLIP 2x64, BPE, context 77 |
| pubmedclip | PubMedCLIP_ViT32.pth (OpenAI state dict)   | OpenAI ViT 2x64, 32 px     | CLIP 2x64, BPE, context 77 |
| pmcclip    | the three PMC-CLIP .pth + BERT files       | ModifiedResNet [1,1,1,1], 32 px | BERT 2x64, context 77 |
| hf-clip    | transformers CLIPModel folder              | CLIP ViT 2x64, 32 px       | CLIP 2x64, BPE, context 77 |
| siglip     | transformers SiglipModel folder            | SigLIP ViT 2x64, 32 px     | SigLIP 2x64, SentencePiece, 64 tokens |

The CLIP text towers keep the real 49408-token BPE vocabulary (the stock tokenizers need it; the
``hf-clip`` one is written as ``vocab.json`` + ``merges.txt`` from open_clip's copy of it), so their
directories are ~13 MB; the others are under 2 MB.  The SigLIP tokenizer is a SentencePiece model
trained here, deterministically, on the word list below (SigLIP's own is a 32000-piece one).
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

from .align import AlignReport, AlignSettings, align_backbone, read_image_set, zero_shot_accuracy
from .base import Backbone
from .factory import build_backbone
from .formats import (OPEN_CLIP_CONFIG, _clip_bpe_tokenizer, PMC_CONFIG, PMC_IMAGE_ENCODER, PMC_TEXT_ENCODER, PMC_TEXT_PROJECTION,
                      PUBMEDCLIP_FILE, instantiate, write_json)
from .micro_vit import MICRO_VIT_IMAGE_SIZE, MICRO_VIT_NAME
from .sources import LOCAL_DIR

TINY_EMBED_DIM = 32  # differs from the text width (64) so that mixing the two up fails loudly
TINY_IMAGE_SIZE = 32
# The hub id a real BiomedCLIP config names is replaced at load time by the directory itself;
# a made-up id here proves that (it cannot resolve anywhere).
TINY_BERT_HUB_ID = "clip-biomed/tiny-random-pubmedbert"
OPENAI_PREPROCESS = {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
                     "interpolation": "bicubic", "resize_mode": "shortest"}

_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = """
a an the of in on at to for from with without by and or not no is are was be this that these those it its
photo image picture scan view slide sample shows showing show seen there which what type kind class case
patient patients normal healthy abnormal disease diseased benign malignant tumor tumour tumors cancer mass
lesion lesions cyst stone stones polyp polyps tissue tissues cell cells brain lung lungs kidney knee skin
colon liver breast eye retina retinal chest bone heart blood x ray xray mri ct oct ultrasound fundus
histology histopathology microscopy endoscopy dermoscopy radiograph medical clinical glioma meningioma
pituitary adenocarcinoma carcinoma squamous basal melanoma nevus keratosis dermatofibroma vascular
actinic melanocytic pneumonia covid viral opacity retinopathy diabetic glaucoma cataract macular edema
drusen choroidal neovascularization osteoarthritis doubtful minimal moderate severe mucosa mucosal glands
gland stroma debris adipose immune epithelium empty background complex simple dyed lifted resection
margins esophagitis cecum pylorus line ulcerative colitis z small large left right upper lower
""".split()


def _vocabulary() -> list:
    punctuation = list(".,;:!?'\"()[]{}-_/\\%&*+=<>#@$")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    digits = [str(d) for d in range(10)]
    # single letters and ##letters let WordPiece spell any lowercase word without [UNK]
    pieces = [f"##{c}" for c in letters + digits] + ["##s", "##es", "##ed", "##ing", "##al", "##ic", "##oma"]
    vocab = _SPECIAL_TOKENS + punctuation + digits + letters + pieces + _WORDS
    return list(dict.fromkeys(vocab))  # unique, order kept


def _write_bert_files(out: Path) -> BertConfig:
    """config.json + tokenizer files of a 2-layer, 64-wide uncased BERT (as PubMedBERT's repo has them)."""
    vocab = _vocabulary()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), _SPECIAL_TOKENS))
    write_json({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, **special},
               out / "tokenizer_config.json")
    # BERT's default init (std 0.02) makes a 2-layer random tower's [CLS] output ignore the other
    # tokens (all class prompts encode alike); a wider init keeps prompts distinguishable, so tiny
    # models can show learning in tests and the demo.
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512, pad_token_id=0, initializer_range=0.5)
    config.save_pretrained(out)
    return config


def _tiny_clip_cfg(head_width: int) -> dict:
    return {"embed_dim": TINY_EMBED_DIM, "quick_gelu": True,
            "vision_cfg": {"image_size": TINY_IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 8,
                           "head_width": head_width},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 64 // head_width,
                         "layers": 2}}


def _write_biomedclip(out: Path) -> None:
    _write_bert_files(out)
    model_cfg = {"embed_dim": TINY_EMBED_DIM,
                 "vision_cfg": {"timm_model_name": MICRO_VIT_NAME, "timm_model_pretrained": False, "timm_pool": "",
                                "timm_proj": "linear", "image_size": MICRO_VIT_IMAGE_SIZE},
                 "text_cfg": {"hf_model_name": TINY_BERT_HUB_ID, "hf_tokenizer_name": TINY_BERT_HUB_ID,
                              "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                              "context_length": 256}}
    write_json({"model_cfg": model_cfg, "preprocess_cfg": OPENAI_PREPROCESS}, out / OPEN_CLIP_CONFIG)
    _save_biomedclip(instantiate(model_cfg, text_dir=out), out)


def _save_biomedclip(model: torch.nn.Module, out: Path) -> None:
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")


_CLIP_HEAD_WIDTH = 32
# OpenAI state dicts carry no head count: the loader assumes heads = width/64 (1 head at width 64)
_PUBMEDCLIP_HEAD_WIDTH = 64


def _write_clip(out: Path) -> None:
    model_cfg = _tiny_clip_cfg(head_width=_CLIP_HEAD_WIDTH)
    write_json({"model_cfg": model_cfg, "preprocess_cfg": OPENAI_PREPROCESS}, out / OPEN_CLIP_CONFIG)
    _save_clip(open_clip.CLIP(**model_cfg), out)


def _save_clip(model: open_clip.CLIP, out: Path) -> None:
    from safetensors.torch import save_file
    # a plain open_clip CLIP, saved as open_clip saves it (text keys at top level, not under `text.`)
    save_file(model.state_dict(), str(out / "open_clip_model.safetensors"))


def _write_pubmedclip(out: Path) -> None:
    _save_pubmedclip(open_clip.CLIP(**_tiny_clip_cfg(head_width=_PUBMEDCLIP_HEAD_WIDTH)), out)


def _save_pubmedclip(model: open_clip.CLIP, out: Path) -> None:
    open_clip.convert_weights_to_fp16(model)  # OpenAI checkpoints keep most weights in fp16
    torch.save({"state_dict": model.state_dict()}, out / PUBMEDCLIP_FILE)


def _write_pmcclip(out: Path) -> None:
    config = _write_bert_files(out)
    arch = {"image_size": TINY_IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 8, "heads": 2}
    image_encoder = ModifiedResNet(layers=arch["layers"], output_dim=TINY_EMBED_DIM, heads=arch["heads"],
                                   image_size=arch["image_size"], width=arch["width"])
    torch.save(image_encoder.state_dict(), out / PMC_IMAGE_ENCODER)
    torch.save(BertModel(config, add_pooling_layer=True).state_dict(), out / PMC_TEXT_ENCODER)
    projection = torch.randn(config.hidden_size, TINY_EMBED_DIM) * config.hidden_size ** -0.5
    torch.save(projection, out / PMC_TEXT_PROJECTION)
    write_json(arch, out / PMC_CONFIG)


def _tiny_tower(**extra) -> dict:
    """A 2-layer, 64-wide transformer config of the transformers CLIP / SigLIP towers."""
    return {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, **extra}


def _tiny_vision_tower() -> dict:
    return _tiny_tower(image_size=TINY_IMAGE_SIZE, patch_size=8)


def _write_hf_clip(out: Path) -> None:
    """A transformers CLIPModel folder as openai/clip-vit-* repositories hold it."""
    bpe = _clip_bpe_tokenizer(77)
    start, end = "<|startoftext|>", "<|endoftext|>"  # open_clip calls them <start_of_text>, <end_of_text>
    start_id, end_id = bpe.sot_token_id, bpe.eot_token_id
    vocab = {**bpe.encoder, start: start_id, end: end_id}
    del vocab["<start_of_text>"], vocab["<end_of_text>"]
    write_json(vocab, out / "vocab.json")
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n",
                                    encoding="utf-8")
    write_json({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                "bos_token": start, "eos_token": end, "pad_token": end, "unk_token": end},
               out / "tokenizer_config.json")
    text = _tiny_tower(vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=start_id,
                       eos_token_id=end_id, pad_token_id=end_id)
    CLIPModel(CLIPConfig(text_config=text, vision_config=_tiny_vision_tower(),
                         projection_dim=TINY_EMBED_DIM)).save_pretrained(out)
    write_json({"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": TINY_IMAGE_SIZE},
                "do_center_crop": True, "crop_size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
                "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": OPENAI_PREPROCESS["mean"], "image_std": OPENAI_PREPROCESS["std"]},
               out / "preprocessor_config.json")


SIGLIP_INIT_LOGIT_SCALE, SIGLIP_INIT_LOGIT_BIAS = math.log(10.0), -10.0  # the SigLIP paper's initialisation


def _write_siglip(out: Path) -> None:
    """A transformers SiglipModel folder as google/siglip-* (and MedSigLIP) repositories hold it."""
    import sentencepiece

    corpus = io.BytesIO()
    # ids as SigLIP's tokenizer has them: <pad> 0, </s> 1 (also the padding SigLIP uses), <unk> 2
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(_WORDS[i:i + 8]) for i in range(0, len(_WORDS), 8)] * 3 + _vocabulary()),
        model_writer=corpus, model_type="unigram", vocab_size=300, hard_vocab_limit=False, character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
    (out / "spiece.model").write_bytes(corpus.getvalue())
    pieces = sentencepiece.SentencePieceProcessor(model_proto=corpus.getvalue()).get_piece_size()
    write_json({"tokenizer_class": "SiglipTokenizer", "model_max_length": 64, "do_lower_case": True,
                "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}, out / "tokenizer_config.json")
    text = _tiny_tower(vocab_size=pieces, max_position_embeddings=64, projection_size=TINY_EMBED_DIM,
                       bos_token_id=None, eos_token_id=1, pad_token_id=1)
    # SigLIP's image features are the vision tower's pooled width: TINY_EMBED_DIM, like the text head's output
    vision = {**_tiny_vision_tower(), "hidden_size": TINY_EMBED_DIM, "intermediate_size": 2 * TINY_EMBED_DIM}
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.fill_(SIGLIP_INIT_LOGIT_SCALE)
        model.logit_bias.fill_(SIGLIP_INIT_LOGIT_BIAS)
    model.save_pretrained(out)
    write_json({"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                "size": {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}, "resample": 3, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5]}, out / "preprocessor_config.json")


_WRITERS = {"biomedclip": _write_biomedclip, "clip": _write_clip, "pubmedclip": _write_pubmedclip,
            "pmcclip": _write_pmcclip, "hf-clip": _write_hf_clip, "siglip": _write_siglip}
TINY_FAMILIES = tuple(_WRITERS)


# --- writing trained weights back ----------------------------------------------------------------
# Every family loads into an open_clip CustomTextCLIP (``formats.py``); these write such a model back
# into the family's own files, so that ``local-dir:`` reads the trained weights exactly as it read
# the random ones.


def _as_plain_clip(model: torch.nn.Module, head_width: int) -> open_clip.CLIP:
    """A CustomTextCLIP with an OpenAI-CLIP text tower as the plain ``open_clip.CLIP`` the files hold:
    the inverse of open_clip's ``convert_to_custom_text_state_dict`` (text keys at the top level)."""
    plain = open_clip.CLIP(**_tiny_clip_cfg(head_width))
    state = {key[len("text."):] if key.startswith("text.") else key: value
             for key, value in model.state_dict().items()}
    plain.load_state_dict(state, strict=True)
    return plain


def _save_trained_pmcclip(model: torch.nn.Module, out: Path) -> None:
    torch.save(model.visual.state_dict(), out / PMC_IMAGE_ENCODER)
    torch.save(model.text.transformer.state_dict(), out / PMC_TEXT_ENCODER)
    # the loader builds the bias-free projection as `text.proj.weight = P.t()` (pooler_output @ P)
    torch.save(model.text.proj.weight.detach().t().contiguous(), out / PMC_TEXT_PROJECTION)
    # PMC-CLIP's logit scale is a constant of the architecture; a trained one goes into the config
    arch = json.loads((out / PMC_CONFIG).read_text(encoding="utf-8"))
    write_json({**arch, "log_logit_scale": model.logit_scale.item()}, out / PMC_CONFIG)


_TRAINED_SAVERS = {
    "biomedclip": _save_biomedclip,
    "clip": lambda model, out: _save_clip(_as_plain_clip(model, _CLIP_HEAD_WIDTH), out),
    "pubmedclip": lambda model, out: _save_pubmedclip(_as_plain_clip(model, _PUBMEDCLIP_HEAD_WIDTH), out),
    "pmcclip": _save_trained_pmcclip,
    "hf-clip": lambda model, out: model.save_pretrained(out),
    "siglip": lambda model, out: model.save_pretrained(out),
}


def write_tiny(family: str, out_dir, seed: int = 0) -> Path:
    """Write a tiny random model of ``family`` into ``out_dir`` (created); returns the directory."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random stream
        torch.manual_seed(seed)
        _WRITERS[family](out)
    return out


# Optimizer steps that align each tiny family on the demo's synthetic BTMRI (4 classes x 20 training
# images) to 100% zero-shot for most seeds.  The BERT towers' saturated attention (their wide init)
# takes hundreds of steps to see past the last word that class names share ("... tumor"): biomedclip
# 14 of 15 seeds with 1000 steps, pmcclip 5 of 5 with 2000 (2 of 5 with 1000); the CLIP towers need
# tens (5 of 5 with 200).
TINY_ALIGN_STEPS = {"biomedclip": 1000, "clip": 200, "pubmedclip": 200, "pmcclip": 2000, "hf-clip": 200, "siglip": 200}


@dataclass(frozen=True)
class AlignedTiny:
    """What :func:`align_tiny` did; zero-shot accuracies ("a photo of a {class}.") are percentages on
    the dataset's test split."""

    backbone: Backbone  # the trained model as it was written (frozen, eval mode, on the CPU)
    report: AlignReport
    zero_shot_before: float
    zero_shot_after: float


def align_tiny(family: str, out_dir, dataset_dir, settings: Optional[AlignSettings] = None,
               device: Union[str, torch.device] = "cpu") -> AlignedTiny:
    """Contrastively pre-train the tiny ``family`` model in ``out_dir`` (written by :func:`write_tiny`)
    on the train split of ``dataset_dir`` (published layout, see ``align.py``) on ``device``, and
    write the trained weights back into the same files.  ``settings`` default: the family's
    :data:`TINY_ALIGN_STEPS`, seed 0."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    settings = settings or AlignSettings(steps=TINY_ALIGN_STEPS[family])
    out = Path(out_dir).expanduser()
    backbone = build_backbone(f"{LOCAL_DIR}{out}", device=device)
    test = read_image_set(dataset_dir, "test", backbone.preprocess)
    before = zero_shot_accuracy(backbone, test)
    report = align_backbone(backbone, dataset_dir, settings)
    after = zero_shot_accuracy(backbone, test)
    backbone.cpu()
    _TRAINED_SAVERS[family](backbone.model, out)
    return AlignedTiny(backbone, report, zero_shot_before=before, zero_shot_after=after)
