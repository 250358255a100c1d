#!/usr/bin/env bash
# Base-to-novel BiomedCoOp: bash scripts/biomedcoop/base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Trains on the base classes (16 shots; SHOTS overrides), tests on them, then evaluates the same
#   context on the new classes.  The evaluated epoch is the last checkpoint of the training run
#   (LOADEP overrides).  Environment as in few_shot.sh.
source "$(dirname "$0")/../common.sh"
require_args 1 "$@"
DATASET=$1
BACKBONE=${2:-BiomedCLIP}
shift $(( $# < 2 ? $# : 2 ))
SHOTS=${SHOTS:-16}
TRAINER=BiomedCoOp
DATASET_CFG=$(dataset_config "$DATASET")
CONFIG=$REPO_ROOT/configs/trainers/$TRAINER/base_to_novel/$DATASET.yaml
if [ ! -f "$CONFIG" ]; then
    echo "No base-to-novel config for '$DATASET' ($CONFIG); the published protocol has none for it." >&2
    exit 2
fi

for SEED in $SEEDS; do
    TAIL=$DATASET/shots_$SHOTS/${TRAINER}_$(backbone_tag "$BACKBONE")/nctx${NCTX}_csc${CSC}_ctp${CTP}/seed$SEED
    TRAIN_DIR=$OUTPUT/base2new/train_base/$TAIL
    TEST_DIR=$OUTPUT/base2new/test_new/$TAIL
    COMMON=(--root "$DATA" --seed "$SEED" --trainer "$TRAINER"
            --dataset-config-file "$DATASET_CFG" --config-file "$CONFIG")
    OPTS=(MODEL.BACKBONE.NAME "$BACKBONE" TRAINER.BIOMEDCOOP.N_CTX "$NCTX" TRAINER.BIOMEDCOOP.CSC "$CSC"
          TRAINER.BIOMEDCOOP.CLASS_TOKEN_POSITION "$CTP" DATASET.NUM_SHOTS "$SHOTS")
    if run_finished "$TRAIN_DIR"; then
        echo "Oops! The results exist at $TRAIN_DIR (so skip this job)"
    else
        "$PYTHON" "$REPO_ROOT/train.py" "${COMMON[@]}" --output-dir "$TRAIN_DIR" \
            "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES base "$@"
    fi
    if run_finished "$TEST_DIR" eval; then
        echo "Oops! The results exist at $TEST_DIR (so skip this job)"
        continue
    fi
    EPOCH=${LOADEP:-$(sed -n 's/^model\.pth\.tar-//p' "$TRAIN_DIR/prompt_learner/checkpoint")}
    "$PYTHON" "$REPO_ROOT/train.py" "${COMMON[@]}" --output-dir "$TEST_DIR" \
        --eval-only --model-dir "$TRAIN_DIR" --load-epoch "$EPOCH" \
        "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES new "$@"
done
echo "Base: $PYTHON $REPO_ROOT/parse_test_res.py $OUTPUT/base2new/train_base/${TAIL%/seed*}"
echo "New:  $PYTHON $REPO_ROOT/parse_test_res.py --test-log $OUTPUT/base2new/test_new/${TAIL%/seed*}"
