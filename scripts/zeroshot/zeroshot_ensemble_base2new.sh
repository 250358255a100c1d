#!/usr/bin/env bash
# Base-to-novel zero-shot, LLM prompt ensemble: bash scripts/zeroshot/zeroshot_ensemble_base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   As zeroshot_base2new.sh with the prompt ensemble; results in
#   OUTPUT/base2new/{train_base,test_new}/<dataset>/Zeroshot<backbone>2/vit_b16.
TRAINER=ZeroshotEnsemble CONFIGS=Zeroshot RUN_PREFIX=Zeroshot RUN_SUFFIX=2
source "$(dirname "$0")/../common.sh"
eval_base2new_main "$@"
