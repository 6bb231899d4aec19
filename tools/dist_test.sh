#!/usr/bin/env bash
# Distributed evaluation with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py args...]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as in OpenMMLab's scripts.
set -e
if [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [test.py args...]" >&2
    exit 2
fi
source "$(dirname "$0")/launch_common.sh"
torchrun "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
