#!/usr/bin/env bash
# Base-to-novel Biomed-DPT: bash scripts/biomeddpt/base2new.sh <dataset> [backbone] [KEY VALUE ...]
#   Trains on the base classes (16 shots; SHOTS overrides), tests on them, then evaluates the trained
#   run on the new classes (its final checkpoint; LOADEP picks another epoch).  Environment as in few_shot.sh.
TRAINER=BiomedDPT NODE=BIOMEDDPT
source "$(dirname "$0")/../common.sh"
base2new_main "$@"
