#!/usr/bin/env bash
# The main job, runnable on a fresh machine with no GPU and no network (`make demo`):
# writes a small synthetic BTMRI dataset and a tiny BiomedCLIP-shaped model contrastively pre-trained
# ("aligned") on its train split, runs few-shot BiomedCoOp for three seeds with
# scripts/biomedcoop/few_shot.sh, and prints the parsed result.
# The same script with BiomedCLIP and the real data is shown in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-demo}
PYTHON=${PYTHON:-python}
EPOCHS=${EPOCHS:-10}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHON

"$PYTHON" -m clip_biomed.data_tools synthetic --out "$DEMO/data" --name BTMRI --per-class 40 --size 32
# A random tiny model would stay at chance (its text and image spaces are unrelated); aligned on the
# train split, it starts with zero-shot ability (printed), as the real BiomedCLIP does.
"$PYTHON" -m clip_biomed.backbones tiny --family biomedclip --out "$DEMO/tiny-biomedclip" --align-to "$DEMO/data/BTMRI"

DATA="$DEMO/data" OUTPUT="$DEMO/output" bash scripts/biomedcoop/few_shot.sh btmri 8 "local-dir:$DEMO/tiny-biomedclip" \
    OPTIM.MAX_EPOCH "$EPOCHS" INPUT.SIZE "(32, 32)" DATALOADER.NUM_WORKERS 0 > "$DEMO/few_shot.log" 2>&1 ||
    { tail -n 40 "$DEMO/few_shot.log" >&2; echo "few_shot.sh failed; full output in $DEMO/few_shot.log" >&2; exit 1; }
echo "Training logs: $DEMO/output/btmri/shots_8/BiomedCoOp_tiny-biomedclip/nctx4_cscFalse_ctpend/seed*/log.txt"
"$PYTHON" parse_test_res.py "$DEMO/output/btmri/shots_8/BiomedCoOp_tiny-biomedclip/nctx4_cscFalse_ctpend"
