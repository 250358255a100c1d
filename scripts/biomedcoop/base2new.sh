#!/usr/bin/env bash
# Base-to-novel BiomedCoOp: bash scripts/biomedcoop/base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Trains on the base classes (16 shots; SHOTS overrides), tests on them, then evaluates the same
#   context on the new classes.  The evaluated checkpoint is the training run's final one (LOADEP
#   picks another epoch).  Environment as in few_shot.sh.
TRAINER=BiomedCoOp NODE=BIOMEDCOOP
source "$(dirname "$0")/../common.sh"
base2new_main "$@"
