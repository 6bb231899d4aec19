#!/usr/bin/env bash
# Quickstart: set everything up, generate a small dataset, train a published DAT++ recipe on
# it for a few minutes on CPU (or GPU), evaluate the checkpoint with tools/test.py, print the
# metrics. No download: generated data, random initialisation.
#   bash tools/quickstart.sh            # Cascade Mask R-CNN + DAT-S++ -> COCO box and mask AP
#   bash tools/quickstart.sh upernet    # UperNet + DAT-T++ (ADE20K format) -> mIoU
# Work directory: work_dirs/quickstart_<task> (removed and rewritten on each run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${DAT_MM_VENV:-$root/.venv}
task=${1:-cascade}
case "$task" in
    cascade) data=coco; config=configs/quickstart/cascade_dat_s_pp_synthetic.py ;;
    upernet) data=ade20k; config=configs/quickstart/upernet_dat_t_pp_synthetic.py ;;
    *) echo "usage: $0 [cascade|upernet]" >&2; exit 2 ;;
esac

bash "$root/tools/install/setup_env.sh"
cd "$root"
py="$venv/bin/python"
export PYTHONUNBUFFERED=1
work="work_dirs/quickstart_$task"
rm -rf "$work"
mkdir -p "$work"
start=$(date +%s)

echo "== 1/3 generate the dataset"
"$py" tools/misc/generate_synthetic_data.py "$data"

echo "== 2/3 train $config (log: $work/train.log)"
"$py" tools/train.py "$config" --work-dir "$work" --no-validate 2>&1 \
    | tee "$work/train.log" | grep --line-buffered -E 'Epoch\(train\)|Iter\(train\)' \
    | sed -u -E 's/^.* - mmengine - INFO - //; s/  (data_time|eta|base_lr|grad_norm|memory): [^ ]+//g; s/^(.{150}).*/\1/'
ckpt=$(cat "$work/last_checkpoint" 2>/dev/null || true)   # written by MMEngine's CheckpointHook
if [ -z "$ckpt" ] || [ ! -f "$ckpt" ]; then
    echo "no checkpoint in $work; see $work/train.log" >&2
    exit 1
fi
trained=$(date +%s)

echo "== 3/3 evaluate $ckpt with tools/test.py (log: $work/test.log)"
"$py" tools/test.py "$config" "$ckpt" --work-dir "$work/test" > "$work/test.log" 2>&1 || {
    tail -n 30 "$work/test.log" >&2; exit 1; }
done_=$(date +%s)

echo
if [ "$task" = cascade ]; then
    # the pycocotools tables CocoMetric printed, box then mask
    awk '/Evaluating bbox/ {t="box"} /Evaluating segm/ {t="mask"}
         /Average (Precision|Recall)/ && t {if (t != last) {print "-- COCO " t " AP"; last=t}; print}' \
        "$work/test.log"
else
    # mmseg's per-class IoU table (classes present in the generated scenes) and the summary
    awk '/per class results/ {p=1} p && /^\|/ && !/\| *nan *\|/ {print} /^\+/ && p {print}' \
        "$work/test.log" | head -n 20
fi
echo
grep -E '(Epoch|Iter)\(test\).*(mAP|mIoU|accuracy)' "$work/test.log" | tail -n 1 \
    | sed -u -E 's/^.* - mmengine - INFO - //'
echo "loss: first logged $(grep -oE ' loss: [0-9.]+' "$work/train.log" | head -n 1 | cut -d' ' -f3)," \
     "last logged $(grep -oE ' loss: [0-9.]+' "$work/train.log" | tail -n 1 | cut -d' ' -f3)"
echo "time: training $((trained - start)) s, evaluation $((done_ - trained)) s" \
     "(setup not included); checkpoint $ckpt"
