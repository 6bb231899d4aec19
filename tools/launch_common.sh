# Sourced by tools/{dist,slurm}_{train,test}.sh: the project's Python and the two launchers.
# PYTHON: the interpreter (default: the checkout's .venv, else python on PATH).
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "$PYTHON" ]; then
    if [ -x "$TOOLS/../.venv/bin/python" ]; then PYTHON="$TOOLS/../.venv/bin/python"; else PYTHON=python; fi
fi

# torchrun NUM_PROCS TOOL ARGS...: NUM_PROCS processes of tools/TOOL on this machine (one per
# GPU; without GPUs, CPU processes with gloo); multi-node with NNODES, NODE_RANK, MASTER_ADDR,
# PORT as in OpenMMLab's scripts.
torchrun() {
    local nproc=$1 tool=$2
    shift 2
    "$PYTHON" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$nproc" \
        --master_port="${PORT:-29500}" \
        "$TOOLS/$tool" "$@"
}

# slurm_run PARTITION JOB_NAME TOOL ARGS...: one task per GPU (GPUS, GPUS_PER_NODE,
# CPUS_PER_TASK, SRUN_ARGS as in OpenMMLab's scripts).
slurm_run() {
    local partition=$1 job_name=$2 tool=$3
    shift 3
    set -x
    # shellcheck disable=SC2086  # SRUN_ARGS is a list of options
    srun -p "$partition" \
        --job-name="$job_name" \
        --gres=gpu:"${GPUS_PER_NODE:-8}" \
        --ntasks="${GPUS:-8}" \
        --ntasks-per-node="${GPUS_PER_NODE:-8}" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        "$PYTHON" -u "$TOOLS/$tool" "$@"
}
