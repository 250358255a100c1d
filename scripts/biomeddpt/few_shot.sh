#!/usr/bin/env bash
# Few-shot Biomed-DPT: bash scripts/biomeddpt/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset, backbone and KEY VALUE as in scripts/biomedcoop/few_shot.sh; configs/trainers/BiomedDPT/.
# Environment as in scripts/biomedcoop/few_shot.sh; NCTX, CSC, CTP default to the config's N_CTX, CSC, CLASS_TOKEN_POSITION.
TRAINER=BiomedDPT NODE=BIOMEDDPT
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
