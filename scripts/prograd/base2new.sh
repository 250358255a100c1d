#!/usr/bin/env bash
# Base-to-novel ProGrad: bash scripts/prograd/base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Trains on the base classes, then evaluates on the new ones, as scripts/biomedcoop/base2new.sh.
TRAINER=ProGrad NODE=PROGRAD
source "$(dirname "$0")/../common.sh"
base2new_main "$@"
