"""Peak memory of one CoCoOp training step on BiomedCLIP's full architecture (random weights).

    python benchmarks/bench_cocoop_memory.py [--batch 4] [--classes 4 8] [--device cpu|cuda]
                                             [--modes padded one-pass recompute]

A step is what the trainer runs: frozen image features of B random 224 px images, the meta-network,
B x C prompts through the text tower (``trainers/cocoop.py: per_image_logits``), cross-entropy,
backward, SGD step.  Modes:

* ``padded``: the prompts padded to BiomedCLIP's 256 tokens, as the published code encodes them
  (emulated by making the last position a real token, so nothing is trimmed: same shapes, same memory);
* ``one-pass``: this project's default: padding trimmed, all B x C prompts in one pass;
* ``recompute``: padding trimmed, one image's C prompts per pass (``TEXT_CHUNK C``) and the text
  tower's activations recomputed in the backward pass (``RECOMPUTE True``).

Every configuration runs in a fresh process.  On CUDA the number is ``torch.cuda.max_memory_allocated``
during the step (and in total, with the model).  On a CPU there is no allocator counter: the
printed number is a PROXY, the growth of the process's peak resident memory (VmHWM, reset through
/proc/self/clear_refs) during the step; it includes allocator slack and is only comparable with
other CPU numbers.  The script asserts nothing.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench_train_step import CLASSNAMES, full_size_biomedclip  # noqa: E402
from clip_biomed.precision import Precision  # noqa: E402
from trainers.cocoop import ConditionalPromptLearner, per_image_logits  # noqa: E402

MODES = ("padded", "one-pass", "recompute")
MIB = 2 ** 20


def resident_kib(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def one_step(mode, n_classes, batch, device):
    """Build the model, run one step, return the measurements (in a fresh process)."""
    torch.manual_seed(0)
    backbone = full_size_biomedclip(device)
    learner = ConditionalPromptLearner(backbone, CLASSNAMES[:n_classes], n_ctx=4, ctx_init="a photo of a").to(device)
    if mode == "padded":
        learner.tokenized_prompts[:, -1] = learner.tokenized_prompts[0, 0]  # a real token at 256: no trimming
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.001, momentum=0.9)
    precision = Precision("fp32", device)
    images = torch.randn(batch, 3, 224, 224, device=device)
    labels = torch.arange(batch, device=device) % n_classes
    text_chunk, recompute = (n_classes, True) if mode == "recompute" else (0, False)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
        before = resident_kib("VmRSS") * 1024
    start = time.perf_counter()
    with torch.no_grad():
        image_features = F.normalize(backbone.encode_image(images), dim=-1)
    logits = per_image_logits(backbone, learner, precision, image_features, text_chunk, recompute)
    precision.backward_and_step(F.cross_entropy(logits, labels), optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak_total = torch.cuda.max_memory_allocated()
    else:
        peak_total = resident_kib("VmHWM") * 1024
    return {"mode": mode, "classes": n_classes, "batch": batch, "seconds": time.perf_counter() - start,
            "step_mib": (peak_total - before) / MIB, "total_mib": peak_total / MIB,
            "tokens": encoded_length(learner.tokenized_prompts, backbone.pad_id)}


def encoded_length(ids, pad_id):
    """Tokens per prompt that the text tower runs on: up to the last real token (padding is trimmed)."""
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    return int(((ids != pad_id) * positions).max())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "CLASSES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.one:
        print(json.dumps(one_step(args.one[0], int(args.one[1]), args.batch, device)))
        return
    what = ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
            "CPU PROXY: growth of the peak resident memory (VmHWM) of the process")
    print(f"CoCoOp step on BiomedCLIP's full architecture (random weights), device {device}, "
          f"batch {args.batch}, fp32; memory = {what}")
    print(f"{'mode':>10} {'classes':>7} {'tokens':>6} {'step MiB':>9} {'total MiB':>9} {'seconds':>7}")
    for n_classes in args.classes:
        for mode in args.modes:
            child = subprocess.run([sys.executable, __file__, "--one", mode, str(n_classes), "--batch", str(args.batch),
                                    "--device", args.device], capture_output=True, text=True)
            if child.returncode:
                print(f"{mode:>10} {n_classes:>7}  failed: {child.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{mode:>10} {n_classes:>7} {r['tokens']:>6} {r['step_mib']:>9.0f} {r['total_mib']:>9.0f} "
                  f"{r['seconds']:>7.1f}")


if __name__ == "__main__":
    main()
