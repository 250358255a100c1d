#!/usr/bin/env bash
# Base-to-novel CoCoOp: bash scripts/cocoop/base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Trains on the base classes, then evaluates on the new ones, as scripts/biomedcoop/base2new.sh.
TRAINER=CoCoOp NODE=COCOOP
source "$(dirname "$0")/../common.sh"
base2new_main "$@"
