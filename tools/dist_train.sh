#!/usr/bin/env bash
# Distributed training on one or more machines with torchrun:
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# NUM_PROCS processes per machine (one per GPU; without GPUs, CPU processes with gloo).
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in OpenMMLab's scripts.
set -e
if [ -z "$1" ] || [ -z "$2" ]; then
    echo "usage: $0 CONFIG NUM_PROCS [train.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/launch_common.sh"
torchrun "$2" train.py "$1" --launcher pytorch "${@:3}"
