#!/usr/bin/env bash
# Few-shot CLIP-LoRA: bash scripts/cliplora/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset, backbone and KEY VALUE as in scripts/biomedcoop/few_shot.sh; configs/trainers/CLIPLoRA/.
# Environment as in scripts/biomedcoop/few_shot.sh (no NCTX/CSC/CTP: CLIP-LoRA learns no text context).
TRAINER=CLIPLoRA
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
