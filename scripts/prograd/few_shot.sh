#!/usr/bin/env bash
# Few-shot ProGrad: bash scripts/prograd/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   Arguments, environment and output layout as scripts/biomedcoop/few_shot.sh.
TRAINER=ProGrad NODE=PROGRAD
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
