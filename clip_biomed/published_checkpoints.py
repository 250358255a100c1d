"""Fetch the authors' released BiomedCoOp checkpoints (every seed, not only seed 1).

    python -m clip_biomed.published_checkpoints --task few_shot --dataset btmri --shots 16 --out checkpoints
    python -m clip_biomed.published_checkpoints --task base2new --dataset btmri --out checkpoints

Files land under ``OUT`` with the repository's own layout, e.g.
``OUT/few_shot/btmri/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed1/prompt_learner/model.pth.tar-100``,
so ``--model-dir OUT/few_shot/.../seed1 --load-epoch 100`` evaluates them.  They are full-model
checkpoints (about 1 GB each); ``trainers/biomedcoop.py`` reads only the learned context from them.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Sequence

REPO_ID = "TahaKoleilat/BiomedCoOp"
RUN_TAIL = "BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend"
TASKS = {"few_shot": 100, "base2new": 50}  # task -> epoch of the released checkpoint


def checkpoint_path(task: str, dataset: str, shots: int, seed: int) -> str:
    """Path of one released checkpoint inside the model repository (and under ``--out``)."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {sorted(TASKS)}")
    if task == "few_shot":
        run_dir = f"few_shot/{dataset}/shots_{shots}/{RUN_TAIL}/seed{seed}"
    else:
        run_dir = f"base2new/train_base/{dataset}/shots_16/{RUN_TAIL}/seed{seed}"
    return f"{run_dir}/prompt_learner/model.pth.tar-{TASKS[task]}"


def fetch(task: str, dataset: str, shots: int, seeds: Sequence[int], out: str) -> List[str]:
    """Download the checkpoints that are not already under ``out``; returns their local paths."""
    paths = []
    for seed in seeds:
        relative = checkpoint_path(task, dataset, shots, seed)
        local = os.path.join(out, relative)
        if not os.path.isfile(local):
            from huggingface_hub import hf_hub_download

            try:
                hf_hub_download(repo_id=REPO_ID, filename=relative, local_dir=out)
            except Exception as error:  # offline, missing file, or hub error: say what to do
                raise SystemExit(
                    f"Could not download {REPO_ID}/{relative}: {error}\n"
                    f"On an offline machine, copy the file to {local} (download it on a connected machine "
                    f"with this same command) and rerun."
                ) from error
        paths.append(local)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="few_shot")
    parser.add_argument("--dataset", required=True, help="lower-case dataset name, e.g. btmri")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default="checkpoints")
    args = parser.parse_args(argv)
    for path in fetch(args.task, args.dataset, args.shots, args.seeds, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
