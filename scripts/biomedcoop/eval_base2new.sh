#!/usr/bin/env bash
# Evaluate the authors' released base-to-novel checkpoints on base and new classes, every seed:
#   bash scripts/biomedcoop/eval_base2new.sh <dataset> [backbone] [KEY VALUE ...]
# Checkpoints are read from CKPT (./checkpoints) and downloaded there first when missing.
source "$(dirname "$0")/../common.sh"
require_args 1 "$@"
DATASET=$1
BACKBONE=${2:-BiomedCLIP}
shift $(( $# < 2 ? $# : 2 ))
CKPT=${CKPT:-./checkpoints}
OUTPUT_EVAL=${OUTPUT_EVAL:-./output_eval}
DATASET_CFG=$(dataset_config "$DATASET")

for SEED in $SEEDS; do
    TAIL=$DATASET/shots_16/BiomedCoOp_BiomedCLIP/nctx4_cscFalse_ctpend/seed$SEED
    MODEL_DIR=$CKPT/base2new/train_base/$TAIL
    "$PYTHON" -m clip_biomed.published_checkpoints --task base2new --dataset "$DATASET" --seeds "$SEED" --out "$CKPT"
    for SUBSET in base new; do
        DIR=$OUTPUT_EVAL/base2new/test_$SUBSET/$TAIL
        if run_finished "$DIR" eval; then
            echo "Oops! The results exist at $DIR (so skip this job)" >&2
            continue
        fi
        "$PYTHON" "$REPO_ROOT/train.py" --root "$DATA" --seed "$SEED" --trainer BiomedCoOp \
            --dataset-config-file "$DATASET_CFG" \
            --config-file "$REPO_ROOT/configs/trainers/BiomedCoOp/base_to_novel/$DATASET.yaml" \
            --output-dir "$DIR" --eval-only --model-dir "$MODEL_DIR" --load-epoch 50 \
            MODEL.BACKBONE.NAME "$BACKBONE" DATASET.SUBSAMPLE_CLASSES "$SUBSET" "$@"
    done
done
for SUBSET in base new; do
    echo "$SUBSET: $PYTHON $REPO_ROOT/parse_test_res.py --test-log $OUTPUT_EVAL/base2new/test_$SUBSET/${TAIL%/seed*}"
done
