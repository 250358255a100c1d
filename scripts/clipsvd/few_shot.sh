#!/usr/bin/env bash
# Few-shot CLIP-SVD: bash scripts/clipsvd/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset, backbone and KEY VALUE as in scripts/biomedcoop/few_shot.sh; configs/trainers/CLIPSVD/.
# Environment as in scripts/biomedcoop/few_shot.sh (no NCTX/CSC/CTP: CLIP-SVD learns no text context).
TRAINER=CLIPSVD
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
