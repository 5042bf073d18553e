#!/usr/bin/env bash
# Issue 4's full-protocol rows on one GPU: every row at once, each row's 3 seeds in parallel
# processes (one small model leaves a GPU mostly idle). Rows land in benchmarks/results/protocol.json
# as with protocol.py itself (a row already there is skipped); logs in benchmarks/runs/gpu_logs/.
#
#   bash benchmarks/gpu_protocol.sh DATA_DIR [EPOCHS]        # DATA_DIR holds the MedMNIST .npz files
#   (environment: DEVICE=cuda, OUTPUT_DIR=benchmarks/runs, PYTHON=python3)
#
# Wall times of rows run this way overlap, so they are not a speed comparison between models.
set -uo pipefail
data=${1:?usage: bash benchmarks/gpu_protocol.sh DATA_DIR [EPOCHS]}
epochs=${2:-100}
device=${DEVICE:-cuda}
runs=${OUTPUT_DIR:-benchmarks/runs}  # e.g. /dev/shm/runs: each epoch rewrites last.pth (400 MB for the 3D ResNet-18)
cd "$(dirname "$0")/.."
logs=benchmarks/runs/gpu_logs
mkdir -p "$logs"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1  # 15 processes share the CPU cores that feed the GPU

rows=("pneumoniamnist focusnet" "pneumoniamnist resnet18" "adrenalmnist3d focusnet" "adrenalmnist3d resnet18" "breastmnist resnet18")
pids=()
for row in "${rows[@]}"; do
    set -- $row
    "${PYTHON:-python3}" benchmarks/protocol.py --datasets "$1" --models "$2" --epochs "$epochs" --device "$device" \
        --seed-workers 3 --data-dir "$data" --output-dir "$runs" > "$logs/$1_$2.log" 2>&1 &
    pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { echo "row failed: ${rows[$i]} (see $logs)"; failed=1; }
done
cat benchmarks/results/protocol.md
exit $failed
