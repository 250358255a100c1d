"""Tiny RANDOM models written in the same on-disk layout a real offline copy uses.

``python -m clip_biomed.backbones tiny --family {biomedclip,clip,pubmedclip,pmcclip} --out DIR``
writes one; ``MODEL.BACKBONE.NAME local-dir:DIR`` then runs exactly the code path of the real
model (format detection, config rewriting, weight loading, tokenizers), in well under a second
on a CPU.  The weights are random: the outputs mean nothing.

| family     | layout (as the real model)                 | image tower                | text tower                 |
|------------|--------------------------------------------|----------------------------|----------------------------|
| biomedclip | open_clip_config.json + .bin + BERT files  | timm micro ViT, 32 px      | BERT 2x64, context 256     |
| clip       | open_clip_config.json + .safetensors       | open_clip ViT 2x64, 32 px  | CLIP 2x64, BPE, context 77 |
| pubmedclip | PubMedCLIP_ViT32.pth (OpenAI state dict)   | OpenAI ViT 2x64, 32 px     | CLIP 2x64, BPE, context 77 |
| pmcclip    | the three PMC-CLIP .pth + BERT files       | ModifiedResNet [1,1,1,1], 32 px | BERT 2x64, context 77 |

The CLIP text towers keep the real 49408-token BPE vocabulary (the stock tokenizer needs it), so
their directories are ~13 MB; the others are under 2 MB.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from open_clip.modified_resnet import ModifiedResNet
from transformers import BertConfig, BertModel

from .formats import (OPEN_CLIP_CONFIG, PMC_CONFIG, PMC_IMAGE_ENCODER, PMC_TEXT_ENCODER, PMC_TEXT_PROJECTION,
                      PUBMEDCLIP_FILE, instantiate, write_json)
from .micro_vit import MICRO_VIT_IMAGE_SIZE, MICRO_VIT_NAME

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
    model = instantiate(model_cfg, text_dir=out)
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    write_json({"model_cfg": model_cfg, "preprocess_cfg": OPENAI_PREPROCESS}, out / OPEN_CLIP_CONFIG)


def _write_clip(out: Path) -> None:
    from safetensors.torch import save_file
    model_cfg = _tiny_clip_cfg(head_width=32)
    # a plain open_clip CLIP, saved as open_clip saves it (text keys at top level, not under `text.`)
    save_file(open_clip.CLIP(**model_cfg).state_dict(), str(out / "open_clip_model.safetensors"))
    write_json({"model_cfg": model_cfg, "preprocess_cfg": OPENAI_PREPROCESS}, out / OPEN_CLIP_CONFIG)


def _write_pubmedclip(out: Path) -> None:
    # OpenAI state dicts carry no head count: heads are width/64 (1 head at width 64)
    model = open_clip.CLIP(**_tiny_clip_cfg(head_width=64))
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


_WRITERS = {"biomedclip": _write_biomedclip, "clip": _write_clip, "pubmedclip": _write_pubmedclip,
            "pmcclip": _write_pmcclip}
TINY_FAMILIES = tuple(_WRITERS)


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
