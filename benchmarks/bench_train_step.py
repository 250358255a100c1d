"""One BiomedCoOp training step as the published code runs it versus as this project runs it.

    python benchmarks/bench_train_step.py [--repeats 5] [--classes 4] [--batch 4] [--device cpu|cuda]

Both run on a randomly initialised model of BiomedCLIP's full architecture (timm ViT-B/16 +
BERT-base text tower + MLP projection, built offline), so no download is needed; speed does not
depend on the weights.  The published step runs the image tower twice (the main copy and the
identical "zero-shot" copy), encodes the learned prompts padded to 256 tokens, normalises the teacher
features again and scores the 50 prompts in a Python loop with one host synchronisation each.  This
project's step is the trainer's own code path: one image pass, padding trimmed by the backbone, the
vectorised loss of ``trainers/biomedcoop.py``.  Both do forward and backward w.r.t. the context.
The script prints medians and their ratio; it asserts nothing (speed is not a unit test).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from clip_biomed.backbones.base import PreprocessInfo  # noqa: E402
from clip_biomed.backbones.open_clip_backbone import OpenClipBackbone  # noqa: E402
from clip_biomed.prompt_learner import PromptLearner  # noqa: E402
from trainers.biomedcoop import biomedcoop_losses  # noqa: E402

CLASSNAMES = ["glioma tumor", "meningioma tumor", "pituitary tumor", "normal brain", "adipose tissue",
              "complex stroma", "debris", "empty background"]


# BiomedCLIP's image preprocessing (224 px, CLIP mean/std, bicubic)
BIOMEDCLIP_PREPROCESS = PreprocessInfo(224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def full_size_biomedclip(device):
    """BiomedCLIP's architecture with random weights, built from a temporary local text config."""
    import open_clip
    from transformers import BertConfig

    from clip_biomed.backbones.tiny import _vocabulary

    with tempfile.TemporaryDirectory(prefix="bert-base-") as text_dir:  # read while building, then removed
        BertConfig(vocab_size=30522, pad_token_id=0).save_pretrained(text_dir)  # BERT-base sizes
        vocab = _vocabulary()
        vocab += [f"[unused{i}]" for i in range(30522 - len(vocab))]
        with open(os.path.join(text_dir, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")
        model = open_clip.CustomTextCLIP(
            embed_dim=512,
            vision_cfg={"timm_model_name": "vit_base_patch16_224", "timm_model_pretrained": False,
                        "timm_pool": "", "timm_proj": "linear", "image_size": 224},
            text_cfg={"hf_model_name": text_dir, "hf_tokenizer_name": text_dir, "hf_model_pretrained": False,
                      "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 256},
        ).to(device).eval().requires_grad_(False)
        tokenizer = open_clip.tokenizer.HFTokenizer(text_dir, context_length=256)
    return OpenClipBackbone.wrap(model, tokenizer, name="BiomedCLIP-architecture (random)", family="biomedclip",
                                 context_length=256, preprocess=BIOMEDCLIP_PREPROCESS)


def published_step(backbone, learner, images, labels, fixed_embeddings, lambdas, tau):
    text = backbone.model.text
    f = F.normalize(backbone.model.encode_image(images), dim=-1)
    with torch.no_grad():
        f_zs = F.normalize(backbone.model.encode_image(images), dim=-1)  # the identical second copy
    ids = learner.token_ids
    mask = (ids != backbone.pad_id).long()
    out = text.transformer(inputs_embeds=learner(), attention_mask=mask)  # all 256 positions
    t = F.normalize(text.proj(text.pooler(out, mask)), dim=-1)
    s = backbone.logit_scale
    logits = s * f @ t.t()
    fixed = F.normalize(fixed_embeddings, dim=-1)  # renormalised every step
    with torch.no_grad():
        scores = [float((s * f @ fixed[:, i].t()).max(dim=1).values.mean()) for i in range(fixed.shape[1])]
        scores = torch.tensor(scores)
        z = (scores - scores.median()) / (scores - scores.median()).abs().median()
        keep = ((z - z.mean()) / z.std()).abs() <= tau
        selected = F.normalize(fixed[:, keep].mean(dim=1), dim=-1)
    prototype = F.normalize(fixed.mean(dim=1), dim=-1)
    teacher = s * f_zs @ selected.t()
    loss = (F.cross_entropy(logits, labels) + lambdas[0] * F.mse_loss(t, prototype)
            + lambdas[1] * F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher, 1), reduction="sum",
                                    log_target=True) / logits.numel())
    loss.backward()


def project_step(backbone, learner, images, labels, prompt_features, prototypes, lambdas, tau):
    with torch.no_grad():
        f = F.normalize(backbone.encode_image(images), dim=-1)
    t = F.normalize(backbone.encode_text_embeddings(learner(), learner.token_ids), dim=-1)
    s = backbone.logit_scale
    logits = s * f @ t.t()
    losses = biomedcoop_losses(logits, labels, f, t, prompt_features, prototypes, s, *lambdas, tau)
    (losses["ce"] + losses["sccm"] + losses["kdsp"]).backward()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = full_size_biomedclip(device)
    backbone.text_tower.train()  # both, as published: BERT dropout on while prompts train
    learner = PromptLearner(backbone, CLASSNAMES[: args.classes], n_ctx=4, ctx_init="a photo of a").to(device)
    images = torch.randn(args.batch, 3, 224, 224, device=device)
    labels = torch.arange(args.batch, device=device) % args.classes
    prompt_features = F.normalize(torch.randn(args.classes, args.prompts, 512, device=device), dim=-1)
    prototypes = F.normalize(prompt_features.mean(1), dim=-1)
    lambdas, tau = (0.5, 0.25), 1.5

    steps = {
        "published": lambda: published_step(backbone, learner, images, labels, prompt_features, lambdas, tau),
        "this project": lambda: project_step(backbone, learner, images, labels, prompt_features, prototypes,
                                             lambdas, tau),
    }
    times = {name: [] for name in steps}
    for name, step in steps.items():  # warm-up
        step()
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        for name, step in steps.items():
            learner.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch}, "
          f"classes {args.classes}, prompts {args.prompts}, repeats {args.repeats}")
    for name, values in times.items():
        print(f"{name:>13}: median {statistics.median(values):.3f} s/step  (min {min(values):.3f})")
    ratio = statistics.median(times["published"]) / statistics.median(times["this project"])
    print(f"speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
