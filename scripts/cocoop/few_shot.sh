#!/usr/bin/env bash
# Few-shot CoCoOp: bash scripts/cocoop/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   Arguments, environment and output layout as scripts/biomedcoop/few_shot.sh.
TRAINER=CoCoOp NODE=COCOOP
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
