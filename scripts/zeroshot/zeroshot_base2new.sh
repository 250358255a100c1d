#!/usr/bin/env bash
# Base-to-novel zero-shot, template "a photo of a {}.": bash scripts/zeroshot/zeroshot_base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Evaluates on the base classes, then on the new ones; results in
#   OUTPUT/base2new/{train_base,test_new}/<dataset>/Zeroshot<backbone>/vit_b16.
TRAINER=Zeroshot CONFIGS=Zeroshot RUN_PREFIX=Zeroshot
source "$(dirname "$0")/../common.sh"
eval_base2new_main "$@"
