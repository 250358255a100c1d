#!/usr/bin/env bash
# Few-shot BiomedAP: bash scripts/biomedap/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset, backbone and KEY VALUE as in scripts/biomedcoop/few_shot.sh; configs/trainers/BiomedAP/.
# Environment as in scripts/biomedcoop/few_shot.sh; NCTX, CSC, CTP default to the config's N_CTX, CSC, CLASS_TOKEN_POSITION.
TRAINER=BiomedAP NODE=BIOMEDAP
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
