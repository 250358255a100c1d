# Shared by the launch scripts (sourced, not run).  CoOp-style: one train.py call per seed,
# results under the published output layout, finished runs skipped so sweeps can be re-launched.
set -euo pipefail

DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-./output}
SEEDS=${SEEDS:-"1 2 3"}
PYTHON=${PYTHON:-python}
NCTX=${NCTX:-4}
CSC=${CSC:-False}
CTP=${CTP:-end}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Trainer folder name of the published layout: BiomedCoOp_BiomedCLIP, BiomedCoOp_CLIP, ...
# A local-dir:/path backbone is named after the folder, an hf-hub:org/name one after the model.
backbone_tag() {
    local name=$1
    name=${name#local-dir:}
    name=${name#hf-hub:}
    name=${name%/}
    name=${name##*/}
    echo "${name//[^A-Za-z0-9._-]/_}"
}

# A run is finished when one of its logs (log.txt, or log.txt-<time> after a resume) holds a test
# accuracy after the end of training (after "=> result" for evaluation-only runs).
run_finished() {
    local signal='^Finish(ed)? training$'
    [ "${2:-}" = eval ] && signal='^=> result$'
    local log
    for log in "$1"/log.txt*; do
        [ -f "$log" ] || continue
        awk -v s="$signal" '$0 ~ s {f=1} f && /^\* accuracy: / {ok=1} END {exit !ok}' "$log" && return 0
    done
    return 1
}

# require_args N "$@": unless N arguments were given, print the calling script's header comment
# (its usage) and exit 2.
require_args() {
    local needed=$1
    shift
    if [ $# -lt "$needed" ]; then
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
        exit 2
    fi
}

dataset_config() {
    local file="$REPO_ROOT/configs/datasets/$1.yaml"
    if [ ! -f "$file" ]; then
        echo "Unknown dataset '$1': no $file. Valid: $(cd "$REPO_ROOT/configs/datasets" && ls | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
        exit 2
    fi
    echo "$file"
}
