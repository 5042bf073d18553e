#!/usr/bin/env bash
# The accuracy rows that 2 CPU cores cannot afford, on one GPU: issue 4's 100-epoch rows, the
# synthetic-lesion rows at 28/64/128 px (FocusNet default, FocusNet with pixel-scaled fovea and
# saliency, ResNet-18), and the pneumoniamnist ablations. Up to JOBS rows run at once, each row's
# 3 seeds in parallel processes (one small model leaves a GPU mostly idle). Rows land in
# benchmarks/results/{protocol,ablations}.json as with protocol.py and ablations.py themselves; a
# row already there is skipped, so a run cut short continues where it stopped. Logs in
# benchmarks/runs/gpu_logs/.
#
#   OUTPUT_DIR=/dev/shm/runs bash benchmarks/gpu_protocol.sh DATA_DIR [EPOCHS]   # DATA_DIR: the MedMNIST .npz files
#   (environment: DEVICE=cuda, OUTPUT_DIR=benchmarks/runs, PYTHON=python3, JOBS=6, ABLATION_EPOCHS=10)
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
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1  # many processes share the CPU cores that feed the GPU
common=(--device "$device" --seed-workers 3 --data-dir "$data")

# "script dataset size model [options]", longest first
rows=("protocol adrenalmnist3d 28 resnet18" "protocol adrenalmnist3d 28 focusnet" "protocol pneumoniamnist 28 focusnet"
      "protocol pneumoniamnist 28 resnet18" "protocol breastmnist 28 resnet18")
for size in 28 64 128; do
    rows+=("protocol synth-lesion $size focusnet" "protocol synth-lesion $size resnet18"
           "protocol synth-lesion $size focusnet --option fovea_scaling=pixels --option saliency=2")
done
for variant in "default (M+P+K, 2 saccades, predictive coding, suppression)" "0 saccades (glance only)" "1 saccade" "4 saccades" \
               "no predictive coding" "no saccadic suppression" "M pathway only" "P pathway only" "K pathway only"; do
    rows+=("ablations pneumoniamnist 28 $variant")
done

failed=0
finish_one() { wait -n || { echo "a row failed (see $logs)"; failed=1; }; }
for row in "${rows[@]}"; do
    read -r script dataset size rest <<< "$row"
    log="$logs/${script}_${dataset}_${size}_$(echo "$rest" | tr -c 'A-Za-z0-9' '_').log"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-6}" ]; do finish_one; done
    if [ "$script" = protocol ]; then
        read -r model options <<< "$rest"
        # shellcheck disable=SC2086  # options are whole words: --option key=value
        "${PYTHON:-python3}" benchmarks/protocol.py --datasets "$dataset" --size "$size" --models "$model" $options \
            --epochs "$epochs" --output-dir "$runs" "${common[@]}" > "$log" 2>&1 &
    else
        "${PYTHON:-python3}" benchmarks/ablations.py --datasets "$dataset" --variants "$rest" --epochs "${ABLATION_EPOCHS:-10}" "${common[@]}" > "$log" 2>&1 &
    fi
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do finish_one; done
cat benchmarks/results/protocol.md
exit $failed
