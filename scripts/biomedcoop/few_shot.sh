#!/usr/bin/env bash
# Few-shot BiomedCoOp: bash scripts/biomedcoop/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset: btmri busi chmnist covid ctkidney dermamnist kneexray kvasir lungcolon octmnist retina
#   backbone: BiomedCLIP (default), CLIP, PubMedCLIP, PMCCLIP, hf-hub:<id> or local-dir:<path>
#   KEY VALUE: extra yacs options passed to train.py (e.g. OPTIM.MAX_EPOCH 10)
# Environment: DATA (dataset root, ./data), OUTPUT (./output), SEEDS ("1 2 3"), PYTHON, NCTX, CSC, CTP.
TRAINER=BiomedCoOp NODE=BIOMEDCOOP
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
