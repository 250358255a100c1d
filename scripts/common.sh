# Shared by the launch scripts (sourced, not run).  CoOp-style: one train.py call per seed,
# results under the published output layout, finished runs skipped so sweeps can be re-launched.
#
# A method's script sets what differs and calls one of the *_main functions:
#   TRAINER   the registered trainer name (also the output folder's prefix: <TRAINER>_<backbone>)
#   CONFIGS   its folder under configs/trainers (default: $TRAINER)
#   NODE      its TRAINER.<NODE> config node when it learns a prompt context: the script then passes
#             N_CTX, CSC and CLASS_TOKEN_POSITION (env NCTX, CSC, CTP) and the run folder gets the
#             published nctx<N>_csc<B>_ctp<P> level; empty for methods without a context.
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

# run_finished <dir> [eval]: true when one of the run's logs (log.txt, or log.txt-<time> after a
# resume) holds a test accuracy at or after the end of training (after "=> result" for
# evaluation-only runs).  The rule of clip_biomed/run_logs.py, line for line (tests check both agree).
run_finished() {
    local signal='^[[:space:]]*Finish(ed)? training[[:space:]]*$'
    [ "${2:-}" = eval ] && signal='^[[:space:]]*=> result[[:space:]]*$'
    local log
    for log in "$1"/log.txt "$1"/log.txt-*; do
        [ -f "$log" ] || continue
        awk -v s="$signal" '$0 ~ s {f=1} f && /\* accuracy: [-+.0-9eE]+%/ {ok=1} END {exit !ok}' "$log" && return 0
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

# run_train <output dir> <train.py arguments...>: one run.  With DRY_RUN=1 nothing runs: one line
# "run<TAB><output dir><TAB><shell-quoted command>" is printed instead, which is how
# `python -m clip_biomed.sweep` learns each run's command and folder from these scripts.
run_train() {
    local dir=$1
    shift
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf 'run\t%s\t%s\n' "$dir" "$(printf '%q ' "$PYTHON" "$REPO_ROOT/train.py" --output-dir "$dir" "$@")"
    else
        "$PYTHON" "$REPO_ROOT/train.py" --output-dir "$dir" "$@"
    fi
}

# skip_finished <output dir> [eval]: true (and says so) when that run has finished.
skip_finished() {
    run_finished "$@" || return 1
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf 'skip\t%s\n' "$1"
    else
        echo "Oops! The results exist at $1 (so skip this job)"
    fi
}

# method_config <few_shot|base_to_novel> <dataset>: the method's config for the dataset, or its
# generic <few_shot|base_to_novel>.yaml when there is no dataset-specific one (e.g. your own data).
method_config() {
    local kind=$1 dataset=$2 dir="$REPO_ROOT/configs/trainers/${CONFIGS:-$TRAINER}"
    if [ -f "$dir/$kind/$dataset.yaml" ]; then
        echo "$dir/$kind/$dataset.yaml"
    elif [ -f "$dir/$kind.yaml" ]; then
        echo "No $kind config for '$dataset' in $dir/$kind/; using the generic $dir/$kind.yaml" >&2
        echo "$dir/$kind.yaml"
    else
        echo "No $kind config for '$dataset': neither $dir/$kind/$dataset.yaml nor $dir/$kind.yaml exists" >&2
        exit 2
    fi
}

# run_tail <backbone>: <TRAINER>_<backbone tag>[/nctx<N>_csc<B>_ctp<P>], the published run folder name.
run_tail() {
    local tail="${TRAINER}_$(backbone_tag "$1")"
    [ -n "${NODE:-}" ] && tail="$tail/nctx${NCTX}_csc${CSC}_ctp${CTP}"
    echo "$tail"
}

# context_opts: the prompt-context options of methods that have a NODE.
context_opts() {
    [ -n "${NODE:-}" ] && echo "TRAINER.$NODE.N_CTX $NCTX TRAINER.$NODE.CSC $CSC TRAINER.$NODE.CLASS_TOKEN_POSITION $CTP"
    return 0
}

# few_shot_main <dataset> <shots> [backbone] [KEY VALUE ...]: train and test every seed.
few_shot_main() {
    require_args 2 "$@"
    local dataset=$1 shots=$2 backbone=${3:-BiomedCLIP}
    shift $(( $# < 3 ? $# : 3 ))
    local dataset_cfg config seed dir
    dataset_cfg=$(dataset_config "$dataset")
    config=$(method_config few_shot "$dataset")
    for seed in $SEEDS; do
        dir=$OUTPUT/$dataset/shots_$shots/$(run_tail "$backbone")/seed$seed
        skip_finished "$dir" && continue
        # shellcheck disable=SC2046  # context_opts is a list of words
        run_train "$dir" --root "$DATA" --seed "$seed" --trainer "$TRAINER" \
            --dataset-config-file "$dataset_cfg" --config-file "$config" \
            MODEL.BACKBONE.NAME "$backbone" $(context_opts) DATASET.NUM_SHOTS "$shots" "$@"
    done
    [ "${DRY_RUN:-0}" = 1 ] || echo "Summary: $PYTHON $REPO_ROOT/parse_test_res.py $OUTPUT/$dataset/shots_$shots/$(run_tail "$backbone")"
}

# base2new_main <dataset> [backbone] [KEY VALUE ...]: train on the base classes (SHOTS, default 16)
# and test on them, then evaluate the trained run on the new classes (its final checkpoint, or the
# epoch LOADEP).
base2new_main() {
    require_args 1 "$@"
    local dataset=$1 backbone=${2:-BiomedCLIP}
    shift $(( $# < 2 ? $# : 2 ))
    local shots=${SHOTS:-16} dataset_cfg config seed tail train_dir test_dir common
    if [ "$dataset" = busi ] && [ "${B2N_ALLOW_BUSI:-0}" != 1 ]; then
        echo "BUSI is not part of the base-to-novel benchmark: its 3 classes leave 1 new class, whose accuracy" \
             "is trivially 100%. Set B2N_ALLOW_BUSI=1 to run it anyway." >&2
        exit 2
    fi
    dataset_cfg=$(dataset_config "$dataset")
    config=$(method_config base_to_novel "$dataset")
    for seed in $SEEDS; do
        tail=$dataset/shots_$shots/$(run_tail "$backbone")/seed$seed
        train_dir=$OUTPUT/base2new/train_base/$tail
        test_dir=$OUTPUT/base2new/test_new/$tail
        common=(--root "$DATA" --seed "$seed" --trainer "$TRAINER" --dataset-config-file "$dataset_cfg"
                --config-file "$config")
        # shellcheck disable=SC2046
        skip_finished "$train_dir" ||
            run_train "$train_dir" "${common[@]}" \
                MODEL.BACKBONE.NAME "$backbone" $(context_opts) DATASET.NUM_SHOTS "$shots" \
                DATASET.SUBSAMPLE_CLASSES base "$@"
        skip_finished "$test_dir" eval && continue
        # shellcheck disable=SC2046
        run_train "$test_dir" "${common[@]}" --eval-only --model-dir "$train_dir" ${LOADEP:+--load-epoch "$LOADEP"} \
            MODEL.BACKBONE.NAME "$backbone" $(context_opts) DATASET.NUM_SHOTS "$shots" \
            DATASET.SUBSAMPLE_CLASSES new "$@"
    done
    [ "${DRY_RUN:-0}" = 1 ] && return 0
    tail=$dataset/shots_$shots/$(run_tail "$backbone")
    echo "Base: $PYTHON $REPO_ROOT/parse_test_res.py $OUTPUT/base2new/train_base/$tail"
    echo "New:  $PYTHON $REPO_ROOT/parse_test_res.py --test-log $OUTPUT/base2new/test_new/$tail"
}
