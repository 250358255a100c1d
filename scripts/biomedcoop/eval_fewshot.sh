#!/usr/bin/env bash
# Evaluate the authors' released few-shot checkpoints, every seed:
#   bash scripts/biomedcoop/eval_fewshot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
# Checkpoints are read from CKPT (./checkpoints) and downloaded there first when missing.
# backbone: BiomedCLIP (default) or local-dir:<offline copy of BiomedCLIP>.  Results go to OUTPUT_EVAL.
source "$(dirname "$0")/../common.sh"
require_args 2 "$@"
DATASET=$1
SHOTS=$2
BACKBONE=${3:-BiomedCLIP}
shift $(( $# < 3 ? $# : 3 ))
CKPT=${CKPT:-./checkpoints}
OUTPUT_EVAL=${OUTPUT_EVAL:-./output_eval}
DATASET_CFG=$(dataset_config "$DATASET")

for SEED in $SEEDS; do
    TAIL=$DATASET/shots_$SHOTS/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed$SEED
    MODEL_DIR=$CKPT/few_shot/$TAIL
    DIR=$OUTPUT_EVAL/$TAIL
    if run_finished "$DIR" eval; then
        echo "Oops! The results exist at $DIR (so skip this job)" >&2
        continue
    fi
    "$PYTHON" -m clip_biomed.published_checkpoints --task few_shot --dataset "$DATASET" --shots "$SHOTS" --seeds "$SEED" --out "$CKPT"
    "$PYTHON" "$REPO_ROOT/train.py" --root "$DATA" --seed "$SEED" --trainer BiomedCoOp \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$REPO_ROOT/configs/trainers/BiomedCoOp/few_shot/$DATASET.yaml" \
        --output-dir "$DIR" --eval-only --model-dir "$MODEL_DIR" --load-epoch 100 \
        MODEL.BACKBONE.NAME "$BACKBONE" "$@"
done
echo "Summary: $PYTHON $REPO_ROOT/parse_test_res.py --test-log $OUTPUT_EVAL/${TAIL%/seed*}"
