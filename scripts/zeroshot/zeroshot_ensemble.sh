#!/usr/bin/env bash
# Zero-shot, LLM prompt ensemble: bash scripts/zeroshot/zeroshot_ensemble.sh <dataset> [backbone] [KEY VALUE ...]
#   As zeroshot.sh with the mean of TRAINER.ZEROSHOT_ENSEMBLE.N_PROMPTS (50) sentences per class;
#   results in OUTPUT/<dataset>/Zeroshot<backbone>2/vit_b16.
TRAINER=ZeroshotEnsemble CONFIGS=Zeroshot RUN_PREFIX=Zeroshot RUN_SUFFIX=2
source "$(dirname "$0")/../common.sh"
eval_main "$@"
