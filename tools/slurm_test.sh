#!/usr/bin/env bash
# Evaluation on a Slurm cluster (one task per GPU):
#   GPUS=8 tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS as in OpenMMLab's scripts.
if [ "$#" -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/launch_common.sh"
slurm_run "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
