#!/usr/bin/env bash
# Few-shot KgCoOp: bash scripts/kgcoop/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   Arguments, environment and output layout as scripts/biomedcoop/few_shot.sh.
TRAINER=KgCoOp NODE=KGCOOP
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
