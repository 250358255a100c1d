# Shared by the launch scripts (sourced, not run).  CoOp-style: one train.py call per seed,
# results under the published output layout, finished runs skipped so sweeps can be re-launched.
# DATA and OUTPUT are relative to the folder the script is run from (never the repository's).
#
# Configs: a dataset is a name (configs/datasets/<name>.yaml) or the path of a YAML anywhere.  Your
# own configs can live outside the repository, in CLIP_BIOMED_CONFIGS (same layout as configs/:
# datasets/<name>.yaml, trainers/<Method>/{few_shot,base_to_novel}[/<dataset>].yaml), which is
# searched before the repository's configs/.
#
# A method's script sets what differs and calls one of the *_main functions:
#   TRAINER   the registered trainer name
#   CONFIGS   its folder under configs/trainers (default: $TRAINER)
#   NODE      its TRAINER.<NODE> config node when it learns a prompt context: the script then passes
#             N_CTX, CSC and CLASS_TOKEN_POSITION (env NCTX, CSC, CTP) and the run folder gets the
#             published nctx<N>_csc<B>_ctp<P> level; empty for methods without a context.
#             Unset NCTX, CSC, CTP take the method config's N_CTX, CSC, CLASS_TOKEN_POSITION when it
#             sets them (else 4, False, end), so a run uses, and its folder names, what the config says.
#   RUN_PREFIX, RUN_SUFFIX  the trainer folder is <RUN_PREFIX><backbone><RUN_SUFFIX>, by default
#             <TRAINER>_<backbone> as published (BiomedCoOp_BiomedCLIP); the zero-shot scripts set
#             the published ZeroshotBiomedCLIP / ZeroshotBiomedCLIP2.
set -euo pipefail

DATA=${DATA:-./data}
OUTPUT=${OUTPUT:-./output}
SEEDS=${SEEDS:-"1 2 3"}
PYTHON=${PYTHON:-python}
NCTX_GIVEN=${NCTX:-}
CSC_GIVEN=${CSC:-}
CTP_GIVEN=${CTP:-}
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

# config_roots: where configs are looked up, yours (CLIP_BIOMED_CONFIGS) first.
config_roots() {
    [ -n "${CLIP_BIOMED_CONFIGS:-}" ] && echo "$CLIP_BIOMED_CONFIGS"
    echo "$REPO_ROOT/configs"
}

# dataset_config <name|path.yaml>: the dataset config file (absolute path).
dataset_config() {
    local dataset=$1 root
    if [[ $dataset == *.yaml || $dataset == */* ]]; then
        if [ ! -f "$dataset" ]; then
            echo "No dataset config file $dataset" >&2
            exit 2
        fi
        echo "$(cd "$(dirname "$dataset")" && pwd)/$(basename "$dataset")"
        return
    fi
    while read -r root; do
        [ -f "$root/datasets/$dataset.yaml" ] && { echo "$root/datasets/$dataset.yaml"; return; }
    done < <(config_roots)
    echo "Unknown dataset '$dataset': no $dataset.yaml in $(config_roots | sed 's|$|/datasets|' | paste -sd' ' -)." \
         "Valid: $(config_roots | while read -r root; do ls "$root/datasets" 2>/dev/null; done | sed -n 's/\.yaml$//p' | sort -u | tr '\n' ' ')" \
         "(or give the path of a dataset YAML; set CLIP_BIOMED_CONFIGS to your config folder)" >&2
    exit 2
}

# dataset_name <name|path.yaml>: the name of a dataset in run folders (a YAML's file name without .yaml).
dataset_name() {
    local name=${1##*/}
    echo "${name%.yaml}"
}

# run_train <output dir> <train.py arguments...>: one run, unless the folder holds it finished already
# (skipped, saying so on stderr).  The arguments are recorded in <output dir>/command.txt: a folder
# holding a run made with other arguments (finished or not) is an error, never reused or resumed,
# so results of other settings are never presented as these.  With DRY_RUN=1 nothing runs: one line
# "run<TAB><output dir><TAB><shell-quoted command><TAB><arguments record>" (or "skip<TAB><output dir>")
# is printed instead (the sweep writes the record to command.txt before it runs the command),
# which is how `python -m clip_biomed.sweep` learns each run's command and folder from these scripts.
run_train() {
    local dir=$1
    shift
    local recorded arguments
    arguments=$(run_arguments "$@")
    if [ -f "$dir/command.txt" ] && [ "$(cat "$dir/command.txt")" != "$arguments" ]; then
        recorded=$(cat "$dir/command.txt")
        {
            echo "$dir holds a run made with other arguments, which is neither reused nor resumed:"
            echo "  that run: $recorded"
            echo "  this one: $arguments"
            echo "Delete $dir to replace it, or set OUTPUT to another folder."
        } >&2
        exit 2
    fi
    skip_finished "$dir" "$(case " $* " in *" --eval-only "*) echo eval;; esac)" && return 0
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf 'run\t%s\t%s\t%s\n' "$dir" "$(printf '%q ' "$PYTHON" "$REPO_ROOT/train.py" --output-dir "$dir" "$@")" "$arguments"
    else
        mkdir -p "$dir"
        echo "$arguments" > "$dir/command.txt"
        "$PYTHON" "$REPO_ROOT/train.py" --output-dir "$dir" "$@"
    fi
}

# run_arguments <train.py arguments...>: what defines a run, on one line: the arguments without
# --root (data may move) and with paths inside the repository written relative to it.
run_arguments() {
    local words=()
    while [ $# -gt 0 ]; do
        if [ "$1" = --root ]; then
            shift 2
            continue
        fi
        words+=("${1#"$REPO_ROOT"/}")
        shift
    done
    local line
    line=$(printf '%q ' "${words[@]}")
    echo "${line% }"
}

# skip_finished <output dir> [eval]: true (and says so) when that run has finished.
skip_finished() {
    run_finished "$@" || return 1
    if [ "${DRY_RUN:-0}" = 1 ]; then
        printf 'skip\t%s\n' "$1"
    else
        echo "Oops! The results exist at $1 (so skip this job)" >&2
    fi
}

# method_config <few_shot|base_to_novel> <dataset>: the method's config for the dataset, or its
# generic <few_shot|base_to_novel>.yaml when there is no dataset-specific one (e.g. your own data, or
# a method with one config for every dataset: then nothing is said).
method_config() {
    local kind=$1 dataset=$2 method=${CONFIGS:-$TRAINER} root
    local roots=()
    while read -r root; do roots+=("$root/trainers/$method"); done < <(config_roots)
    for root in "${roots[@]}"; do
        [ -f "$root/$kind/$dataset.yaml" ] && { echo "$root/$kind/$dataset.yaml"; return; }
    done
    for root in "${roots[@]}"; do
        if [ -f "$root/$kind.yaml" ]; then
            # said only where the method has per-dataset configs, just not this dataset's
            [ -d "$root/$kind" ] && echo "No $kind/$dataset.yaml in ${roots[*]}; using the generic $root/$kind.yaml" >&2
            echo "$root/$kind.yaml"
            return
        fi
    done
    echo "No $kind config for '$dataset': no $kind/$dataset.yaml and no generic $kind.yaml in ${roots[*]}" >&2
    exit 2
}

# config_value <yaml> <KEY>: the value of the first "KEY: value" line of a config file (quotes and
# comments dropped), empty when the file has none.
config_value() {
    sed -n "s/^[[:space:]]*$2:[[:space:]]*\"\{0,1\}\([^\"#[:space:]]*\).*/\1/p" "$1" | head -n 1
}

# context_defaults <method config>: NCTX, CSC and CTP as given in the environment, else the config's
# values, else 4, False, end.
context_defaults() {
    NCTX=${NCTX_GIVEN:-$(config_value "$1" N_CTX)}
    CSC=${CSC_GIVEN:-$(config_value "$1" CSC)}
    CTP=${CTP_GIVEN:-$(config_value "$1" CLASS_TOKEN_POSITION)}
    NCTX=${NCTX:-4} CSC=${CSC:-False} CTP=${CTP:-end}
}

# run_tail <backbone>: <TRAINER>_<backbone tag>[/nctx<N>_csc<B>_ctp<P>], the published run folder name.
run_tail() {
    local tail="${RUN_PREFIX-${TRAINER}_}$(backbone_tag "$1")${RUN_SUFFIX:-}"
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
    local dataset shots=$2 backbone=${3:-BiomedCLIP}
    dataset=$(dataset_name "$1")
    local dataset_cfg config seed dir
    dataset_cfg=$(dataset_config "$1")
    shift $(( $# < 3 ? $# : 3 ))
    config=$(method_config few_shot "$dataset")
    context_defaults "$config"
    for seed in $SEEDS; do
        dir=$OUTPUT/$dataset/shots_$shots/$(run_tail "$backbone")/seed$seed
        # shellcheck disable=SC2046  # context_opts is a list of words
        run_train "$dir" --root "$DATA" --seed "$seed" --trainer "$TRAINER" \
            --dataset-config-file "$dataset_cfg" --config-file "$config" \
            MODEL.BACKBONE.NAME "$backbone" $(context_opts) DATASET.NUM_SHOTS "$shots" "$@"
    done
    [ "${DRY_RUN:-0}" = 1 ] || echo "Summary: $PYTHON $REPO_ROOT/parse_test_res.py $OUTPUT/$dataset/shots_$shots/$(run_tail "$backbone")"
}

check_base2new_dataset() {
    if [ "$1" = busi ] && [ "${B2N_ALLOW_BUSI:-0}" != 1 ]; then
        echo "BUSI is not part of the base-to-novel benchmark: its 3 classes leave 1 new class, whose accuracy" \
             "is trivially 100%. Set B2N_ALLOW_BUSI=1 to run it anyway." >&2
        exit 2
    fi
}

# base2new_main <dataset> [backbone] [KEY VALUE ...]: train on the base classes (SHOTS, default 16)
# and test on them, then evaluate the trained run on the new classes (its final checkpoint, or the
# epoch LOADEP).
base2new_main() {
    require_args 1 "$@"
    local dataset backbone=${2:-BiomedCLIP}
    dataset=$(dataset_name "$1")
    local shots=${SHOTS:-16} dataset_cfg config seed tail train_dir test_dir common
    dataset_cfg=$(dataset_config "$1")
    shift $(( $# < 2 ? $# : 2 ))
    check_base2new_dataset "$dataset"
    config=$(method_config base_to_novel "$dataset")
    context_defaults "$config"
    for seed in $SEEDS; do
        tail=$dataset/shots_$shots/$(run_tail "$backbone")/seed$seed
        train_dir=$OUTPUT/base2new/train_base/$tail
        test_dir=$OUTPUT/base2new/test_new/$tail
        common=(--root "$DATA" --seed "$seed" --trainer "$TRAINER" --dataset-config-file "$dataset_cfg"
                --config-file "$config")
        # shellcheck disable=SC2046
        run_train "$train_dir" "${common[@]}" \
            MODEL.BACKBONE.NAME "$backbone" $(context_opts) DATASET.NUM_SHOTS "$shots" \
            DATASET.SUBSAMPLE_CLASSES base "$@"
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

# Methods that learn nothing (zero-shot) are evaluated once, without seeds, in the published layout:
# <OUTPUT>/<dataset>/<trainer folder>/vit_b16 (the published config's name), so that
# `parse_test_res.py --test-log <OUTPUT>/<dataset>/<trainer folder>` reads the run.
EVAL_RUN=vit_b16

# eval_main <dataset> [backbone] [KEY VALUE ...]: evaluate on every class of the test split.
eval_main() {
    require_args 1 "$@"
    local dataset backbone=${2:-BiomedCLIP} dataset_cfg config experiment
    dataset=$(dataset_name "$1")
    dataset_cfg=$(dataset_config "$1")
    shift $(( $# < 2 ? $# : 2 ))
    config=$(method_config few_shot "$dataset")
    experiment=$OUTPUT/$dataset/$(run_tail "$backbone")
    run_train "$experiment/$EVAL_RUN" --root "$DATA" --trainer "$TRAINER" --dataset-config-file "$dataset_cfg" \
            --config-file "$config" --eval-only MODEL.BACKBONE.NAME "$backbone" "$@"
    [ "${DRY_RUN:-0}" = 1 ] || echo "Summary: $PYTHON $REPO_ROOT/parse_test_res.py --test-log $experiment"
}

# eval_base2new_main <dataset> [backbone] [KEY VALUE ...]: evaluate on the base classes, then on the
# new ones, under base2new/train_base and base2new/test_new as the trained methods' results.
eval_base2new_main() {
    require_args 1 "$@"
    local dataset backbone=${2:-BiomedCLIP} dataset_cfg config subset folder experiment
    dataset=$(dataset_name "$1")
    dataset_cfg=$(dataset_config "$1")
    shift $(( $# < 2 ? $# : 2 ))
    check_base2new_dataset "$dataset"
    config=$(method_config base_to_novel "$dataset")
    for subset in base new; do
        folder=train_base
        [ "$subset" = new ] && folder=test_new
        experiment=$OUTPUT/base2new/$folder/$dataset/$(run_tail "$backbone")
        run_train "$experiment/$EVAL_RUN" --root "$DATA" --trainer "$TRAINER" --dataset-config-file "$dataset_cfg" \
            --config-file "$config" --eval-only MODEL.BACKBONE.NAME "$backbone" DATASET.SUBSAMPLE_CLASSES "$subset" "$@"
    done
    [ "${DRY_RUN:-0}" = 1 ] && return 0
    for folder in train_base test_new; do
        echo "${folder#*_}: $PYTHON $REPO_ROOT/parse_test_res.py --test-log $OUTPUT/base2new/$folder/$dataset/$(run_tail "$backbone")"
    done
}
