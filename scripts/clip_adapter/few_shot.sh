#!/usr/bin/env bash
# Few-shot CLIP-Adapter: bash scripts/clip_adapter/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset: btmri busi chmnist covid ctkidney dermamnist kneexray kvasir lungcolon octmnist retina
#   backbone: BiomedCLIP (default), CLIP, PubMedCLIP, PMCCLIP, hf-hub:<id> or local-dir:<path>
#   KEY VALUE: extra yacs options passed to train.py (e.g. OPTIM.MAX_EPOCH 10)
# One train.py run per seed on frozen features (the feature cache makes repeats cheap); output in
# $OUTPUT/<dataset>/shots_<shots>/ClipAdapter_<backbone>/seed<S>.  Environment: DATA, OUTPUT, SEEDS, PYTHON.
TRAINER=ClipAdapter
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
