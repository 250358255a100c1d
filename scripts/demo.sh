#!/usr/bin/env bash
# The main job, runnable on a fresh machine with no GPU and no network (`make demo`):
# writes a small synthetic BTMRI dataset whose classes overlap (no classifier reaches 100%) and a tiny
# BiomedCLIP-shaped model briefly pre-trained ("aligned") on its training images, so that its zero-shot
# accuracy is above chance but far from perfect, as with the real BiomedCLIP; runs the methods of
# METHODS over K = SHOTS shots and three seeds with `python -m clip_biomed.sweep`; and prints the
# side-by-side table of `python -m clip_biomed.results` (which also writes the few-shot plot).
# Settings (environment): METHODS, SHOTS, SEEDS, EPOCHS, DEMO (the folder, default ./demo), PYTHON.
# Every combination of settings has its own folder under DEMO, so a run with other settings never
# shows another run's results; the same settings again reuse the finished runs (the sweep says so).
set -euo pipefail
cd "$(dirname "$0")/.."
# The methods compared: any method with launch scripts (scripts/<method>/few_shot.sh, zero-shot ones).
METHODS=${METHODS:-"Zeroshot CoOp BiomedCoOp LinearProbe TIPAdapter"}
SHOTS=${SHOTS:-"1 4 8"}
SEEDS=${SEEDS:-"1 2 3"}
EPOCHS=${EPOCHS:-20}
DEMO=${DEMO:-demo}
PYTHON=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHON

settings="${METHODS// /+}_shots${SHOTS// /-}_seeds${SEEDS// /-}_epochs$EPOCHS"
RUN=$DEMO/$settings
echo "Demo folder (these settings): $RUN"
"$PYTHON" -m clip_biomed.data_tools synthetic --out "$RUN/data" --name BTMRI --per-class 40 --size 32 --overlap 0.6
# A random tiny model would stay at chance (its text and image spaces are unrelated); 200 steps of
# contrastive pre-training give it some zero-shot ability (printed: "Aligned to ...: before -> after").
"$PYTHON" -m clip_biomed.backbones tiny --family biomedclip --out "$RUN/tiny-biomedclip" \
    --align-to "$RUN/data/BTMRI" --align-steps 200

# Demo settings for every method: all K x 4 training images in one batch and a learning rate for 20
# steps (the paper: batches of 4 for 100 epochs), and the text tower in eval mode (BiomedCoOp's
# published dropout keeps a 2-layer tower from learning).
# shellcheck disable=SC2086  # METHODS, SHOTS and SEEDS are lists of words
"$PYTHON" -m clip_biomed.sweep --methods $METHODS --datasets btmri --shots $SHOTS --seeds $SEEDS \
    --backbone "local-dir:$RUN/tiny-biomedclip" --data "$RUN/data" --output "$RUN/output" --jobs 2 \
    --opts OPTIM.MAX_EPOCH "$EPOCHS" OPTIM.LR 0.05 DATALOADER.TRAIN_X.BATCH_SIZE 32 TRAINER.BIOMEDCOOP.TEXT_DROPOUT False \
    INPUT.SIZE "(32, 32)" DATALOADER.NUM_WORKERS 0 FEATURE_CACHE.DIR "$RUN/feature_cache"
"$PYTHON" -m clip_biomed.results "$RUN/output" --out "$RUN/results"
