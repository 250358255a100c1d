#!/usr/bin/env bash
# Few-shot CoOp: bash scripts/coop/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   Arguments, environment and output layout as scripts/biomedcoop/few_shot.sh.
TRAINER=CoOp NODE=COOP
source "$(dirname "$0")/../common.sh"
few_shot_main "$@"
