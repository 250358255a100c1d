"""What the frozen-feature cache saves: one evaluation, a small sweep, and the memory it costs.

    python benchmarks/bench_feature_cache.py [--test-per-class 40] [--seeds 1 2 3]
        [--prompt-methods BiomedCoOp CoOp] [--feature-methods LinearProbe TIPAdapter]
        [--model full|tiny] [--device cpu|cuda] [--skip-sweep]

Everything runs in this process on a synthetic BTMRI (4 classes, ``--test-per-class`` x 4 images in
the published 50/20/30 split, so 12 test images per class by default) and, with ``--model full``,
a model of BiomedCLIP's full architecture with random weights (timm ViT-B/16 + BERT-base + MLP
projection, built offline as ``bench_train_step.py`` builds it; speed does not depend on the
weights).  Each trainer is built and run as ``train.py`` runs it (same config merge, same code),
with its output in a temporary folder; the memoised weight fingerprints are dropped before every
run and evaluation, as a fresh process would start without them.

(a) a BiomedCoOp context is trained (1 shot, 1 epoch); then its test set is evaluated twice: the
    first evaluation encodes the images and stores them, the second reads the cache.
(b) a sweep: every seed x every method (the prompt methods that are registered, and feature
    methods), 1 shot, a few epochs; once with an empty cache, once again with the cache it filled.
(c) the peak resident memory (GPU: peak allocated) of the first and of the second evaluation, and
    the size of the cache on disk.

Each comparison ends with a line ``ratio <name>: <x>x``.  Nothing is asserted (speed is not a
unit test).  Trainer logs go to ``<temporary folder>/*.log``.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

import train  # noqa: E402
from benchmarks.bench_train_step import BIOMEDCLIP_PREPROCESS, full_size_biomedclip  # noqa: E402
from clip_biomed.backbones import register_backbone  # noqa: E402
from clip_biomed.backbones.testing import make_tiny, tiny_name  # noqa: E402
from clip_biomed.dassl import TRAINER_REGISTRY, build_trainer, set_random_seed  # noqa: E402
from clip_biomed.data_tools.synthetic import write_synthetic_dataset  # noqa: E402
from clip_biomed.feature_cache import forget_fingerprints  # noqa: E402

FULL_MODEL = "BenchRandomBiomedCLIP"
CONFIG_FOLDERS = {"TIPAdapterTrainingFree": "TIPAdapter"}  # else configs/trainers/<method>/
# Few epochs and small searches: the sweep measures the cache, not the methods.  Other methods
# (e.g. CoOp) run one epoch of batches of 4.
ONE_EPOCH = ["OPTIM.MAX_EPOCH", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]
METHOD_OPTS = {
    "BiomedCoOp": ONE_EPOCH + ["TRAINER.BIOMEDCOOP.N_PROMPTS", "4"],
    "ClipAdapter": ["OPTIM.MAX_EPOCH", "2"],
    "TIPAdapter": ["OPTIM.MAX_EPOCH", "2", "TRAINER.TIPADAPTER.INIT_ALPHA_SCALE", "2",
                   "TRAINER.TIPADAPTER.SEARCH_STEP", "[50, 50]"],
    "TIPAdapterTrainingFree": [],
    "LinearProbe": [],
    "LinearProbe_P2": ["OPTIM.MAX_EPOCH", "50"],
}


def method_config(method):
    """The method's BTMRI config, else its generic one (as scripts/common.sh picks it)."""
    folder = os.path.join(REPO, "configs", "trainers", CONFIG_FOLDERS.get(method, method))
    for path in (os.path.join(folder, "few_shot", "btmri.yaml"), os.path.join(folder, "few_shot.yaml")):
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{method} has no few-shot config in {folder}")


class InMemoryModel:
    """A backbone record (``formats.py``'s ``build``) handing out one model built once."""

    def __init__(self, device):
        self.device, self.model = device, None

    preprocess = BIOMEDCLIP_PREPROCESS  # what the data pipeline follows (image_input.py)

    def build(self, name):
        if self.model is None:
            self.model = full_size_biomedclip(self.device)
        return self.model


class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.root = os.path.join(work, "data")
        self.cache = os.path.join(work, "cache-evaluation")  # (b) uses a cache of its own
        self.runs = 0
        write_synthetic_dataset(self.root, "BTMRI", per_class=args.test_per_class * 10 // 3, size=64)
        if args.model == "full":
            register_backbone(FULL_MODEL)(lambda argument, record=InMemoryModel(args.device): record)
            self.backbone, self.input = FULL_MODEL, []
        else:
            self.backbone, self.input = tiny_name(make_tiny("biomedclip", os.path.join(work, "tiny"))), \
                ["INPUT.SIZE", "(32, 32)"]
        self.plugins = train.import_plugins([])

    def trainer(self, method, seed, *opts):
        self.runs += 1
        out = os.path.join(self.work, "runs", f"{self.runs:03d}-{method}-seed{seed}")
        args = train.build_parser().parse_args([
            "--root", self.root, "--trainer", method, "--seed", str(seed), "--output-dir", out,
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", method_config(method),
            "MODEL.BACKBONE.NAME", self.backbone, "DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "16", "FEATURE_CACHE.DIR", self.cache,
            "USE_CUDA", str(self.args.device == "cuda"),
            *self.input, *METHOD_OPTS.get(method, ONE_EPOCH), *opts,
        ])
        cfg = train.setup_cfg(args, self.plugins)
        set_random_seed(seed)  # as train.py does before building the trainer
        return build_trainer(cfg)

    @contextlib.contextmanager
    def logged(self, name):
        with open(os.path.join(self.work, f"{name}.log"), "a") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            yield

    def sync(self):
        if self.args.device == "cuda":
            torch.cuda.synchronize()


def peak_memory_reset(device):
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open("/proc/self/clear_refs", "w") as f:  # Linux: resets the peak resident set (VmHWM)
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mib(device):
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_evaluation(bench, trainer):
    forget_fingerprints()
    resettable = peak_memory_reset(bench.args.device)
    bench.sync()
    start = time.perf_counter()
    with bench.logged("evaluation"):
        trainer.test()
    bench.sync()
    return time.perf_counter() - start, peak_memory_mib(bench.args.device), resettable


def run_evaluations(bench):
    import sklearn.metrics  # noqa: F401  (the evaluator's first call imports it: not a cost of encoding)

    with bench.logged("evaluation"):
        trainer = bench.trainer("BiomedCoOp", 1, "TEST.NO_TEST", "True")
        trainer.train()
    first, first_peak, resettable = timed_evaluation(bench, trainer)
    second, second_peak, _ = timed_evaluation(bench, trainer)
    n_test = len(trainer.dm.dataset.test)
    print(f"(a) evaluation of a trained BiomedCoOp context on {n_test} test images, backbone "
          f"{'BiomedCLIP architecture, random weights' if bench.args.model == 'full' else 'tiny BiomedCLIP'}, "
          f"{bench.args.device}, {torch.get_num_threads()} torch threads")
    print(f"    first (encode and store): {first:.2f} s   second (read the cache): {second:.2f} s")
    print(f"ratio evaluation first/second: {first / second:.1f}x")
    return first_peak, second_peak, resettable


def run_sweep(bench, methods):
    bench.cache = os.path.join(bench.work, "cache-sweep")  # empty: the first pass is cold
    times = {}
    for phase in ("cold", "warm"):
        start = time.perf_counter()
        for seed in bench.args.seeds:
            for method in methods:
                forget_fingerprints()
                with bench.logged(f"sweep-{phase}"):
                    bench.trainer(method, seed).train()
        bench.sync()
        times[phase] = time.perf_counter() - start
    runs = len(methods) * len(bench.args.seeds)
    print(f"(b) sweep of synthetic BTMRI, 1 shot: seeds {' '.join(map(str, bench.args.seeds))} x {', '.join(methods)} "
          f"({runs} runs)")
    print(f"    cold cache: {times['cold']:.1f} s   warm cache: {times['warm']:.1f} s")
    print(f"ratio sweep cold/warm: {times['cold'] / times['warm']:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-per-class", type=int, default=12, help="test images per class (default 12)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--prompt-methods", nargs="+", default=["BiomedCoOp", "CoOp"],
                        help="prompt methods of the sweep; those not registered (e.g. without their trainer module) are skipped, and named")
    parser.add_argument("--feature-methods", nargs="+", default=["LinearProbe", "TIPAdapter"])
    parser.add_argument("--model", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-sweep", action="store_true", help="only (a) and (c)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-feature-cache-") as work:
        bench = Bench(args, work)
        registered = set(TRAINER_REGISTRY.registered_names())
        prompt = [m for m in args.prompt_methods if m in registered]
        skipped = [m for m in args.prompt_methods if m not in registered]
        unknown = [m for m in args.feature_methods if m not in registered]
        if unknown:
            parser.error(f"unknown feature method(s) {', '.join(unknown)}; registered: {', '.join(sorted(registered))}")
        first_peak, second_peak, resettable = run_evaluations(bench)
        if not args.skip_sweep:
            if skipped:
                print(f"    (prompt methods not registered, left out: {', '.join(skipped)})")
            run_sweep(bench, prompt + args.feature_methods)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(work) for f in files
                   if f.endswith(".safetensors"))
        kind = "GPU memory allocated" if args.device == "cuda" else "resident memory"
        note = "" if resettable else " (the peak could not be reset: both are the process peak)"
        print(f"(c) peak {kind}: first evaluation {first_peak:.0f} MiB, second {second_peak:.0f} MiB{note}; "
              f"all cache entries on disk {size / 2**20:.2f} MiB")
        print(f"ratio peak memory first/second evaluation: {first_peak / second_peak:.2f}x")


if __name__ == "__main__":
    main()
