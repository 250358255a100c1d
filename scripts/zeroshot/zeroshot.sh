#!/usr/bin/env bash
# Zero-shot, template "a photo of a {}.": bash scripts/zeroshot/zeroshot.sh <dataset> [backbone] [KEY VALUE ...]
#   Evaluates the frozen backbone once on every class; results in OUTPUT/<dataset>/Zeroshot<backbone>/vit_b16.
#   dataset, backbone, KEY VALUE and environment (DATA, OUTPUT, PYTHON) as scripts/biomedcoop/few_shot.sh.
TRAINER=Zeroshot CONFIGS=Zeroshot RUN_PREFIX=Zeroshot
source "$(dirname "$0")/../common.sh"
eval_main "$@"
