#!/usr/bin/env bash
# Training on a Slurm cluster (one task per GPU):
#   GPUS=64 tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# e.g. the published detection batch: GPUS=32 (4 nodes x 8) with 2 images per GPU.
# GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS as in OpenMMLab's scripts.
if [ "$#" -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/launch_common.sh"
slurm_run "$1" "$2" train.py "$3" --work-dir="$4" --launcher=slurm "${@:5}"
