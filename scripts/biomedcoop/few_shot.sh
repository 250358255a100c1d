#!/usr/bin/env bash
# Few-shot BiomedCoOp: bash scripts/biomedcoop/few_shot.sh <dataset> <shots> [backbone] [KEY VALUE ...]
#   dataset: btmri busi chmnist covid ctkidney dermamnist kneexray kvasir lungcolon octmnist retina
#   backbone: BiomedCLIP (default), CLIP, PubMedCLIP, PMCCLIP, hf-hub:<id> or local-dir:<path>
#   KEY VALUE: extra yacs options passed to train.py (e.g. OPTIM.MAX_EPOCH 10)
# Environment: DATA (dataset root, ./data), OUTPUT (./output), SEEDS ("1 2 3"), PYTHON, NCTX, CSC, CTP.
source "$(dirname "$0")/../common.sh"
require_args 2 "$@"
DATASET=$1
SHOTS=$2
BACKBONE=${3:-BiomedCLIP}
shift $(( $# < 3 ? $# : 3 ))
TRAINER=BiomedCoOp
DATASET_CFG=$(dataset_config "$DATASET")

for SEED in $SEEDS; do
    DIR=$OUTPUT/$DATASET/shots_$SHOTS/${TRAINER}_$(backbone_tag "$BACKBONE")/nctx${NCTX}_csc${CSC}_ctp${CTP}/seed$SEED
    if run_finished "$DIR"; then
        echo "Oops! The results exist at $DIR (so skip this job)"
        continue
    fi
    "$PYTHON" "$REPO_ROOT/train.py" \
        --root "$DATA" \
        --seed "$SEED" \
        --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG" \
        --config-file "$REPO_ROOT/configs/trainers/$TRAINER/few_shot/$DATASET.yaml" \
        --output-dir "$DIR" \
        MODEL.BACKBONE.NAME "$BACKBONE" \
        TRAINER.BIOMEDCOOP.N_CTX "$NCTX" \
        TRAINER.BIOMEDCOOP.CSC "$CSC" \
        TRAINER.BIOMEDCOOP.CLASS_TOKEN_POSITION "$CTP" \
        DATASET.NUM_SHOTS "$SHOTS" \
        "$@"
done
echo "Summary: $PYTHON $REPO_ROOT/parse_test_res.py $OUTPUT/$DATASET/shots_$SHOTS/${TRAINER}_$(backbone_tag "$BACKBONE")/nctx${NCTX}_csc${CSC}_ctp${CTP}"
