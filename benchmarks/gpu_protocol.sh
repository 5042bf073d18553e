#!/usr/bin/env bash
# The accuracy rows that 2 CPU cores cannot afford, on one GPU: issue 4's 100-epoch rows, the
# synthetic-lesion rows at 28/64/128 px (FocusNet default, FocusNet with pixel-scaled fovea and
# saliency, FocusNet with a native-resolution glance, ResNet-18; at 28 px also FocusNet glance-only and
# with the gated readout), and every ablation on
# pneumoniamnist, synth-lesion and breastmnist. Up to JOBS rows run at once, each row's
# 3 seeds in parallel processes (one small model leaves a GPU mostly idle). Rows land in
# benchmarks/results/{protocol,ablations}.json as with protocol.py and ablations.py themselves; a
# row already there is skipped, so a run cut short continues where it stopped. Logs in
# benchmarks/runs/gpu_logs/.
#
#   OUTPUT_DIR=/dev/shm/runs bash benchmarks/gpu_protocol.sh DATA_DIR [EPOCHS]   # DATA_DIR: the MedMNIST .npz files
#   EPOCHS (default 100, the official protocol) is the MedMNIST rows' budget; the synthetic-lesion rows take
#   SYNTH_EPOCHS (default 50, the budget of those already measured); the ablations keep their own.
#   (environment: DEVICE=cuda, SYNTH_EPOCHS=50, OUTPUT_DIR=benchmarks/runs, LOG_DIR=benchmarks/runs/gpu_logs, PYTHON=python3, JOBS=6,
#    ONLY=an extended regex: run only the rows it matches, e.g. ONLY='^ablations pneumoniamnist' for a short lease)
# On a 15-minute lease of one H100, the three synthetic-lesion pairs fit at 50 epochs (their six rows took 2.6-8 min,
# eight rows at once): ONLY='^protocol synth-lesion (28|64|128) (focusnet|resnet18)$' JOBS=8 ... DATA_DIR
# (measured; three 28-px FocusNet rows at once took 1.1-1.9 min). On a 15-minute H200 lease the 3D ResNet-18 at 100 epochs
# (3 seeds) and the two 64-px glance_size=64 rows (readout=gated, no saccades) fit together: 7 min, all nine seeds at once.
#
# Wall times of rows run this way overlap, so they are not a speed comparison between models.
set -uo pipefail
data=$(realpath "${1:?usage: bash benchmarks/gpu_protocol.sh DATA_DIR [EPOCHS]}")  # absolute: the script cds below
epochs=${2:-100}
synth_epochs=${SYNTH_EPOCHS:-50}
device=${DEVICE:-cuda}
root=$(realpath "$(dirname "$0")/..")
runs=$(realpath -m "${OUTPUT_DIR:-$root/benchmarks/runs}")  # e.g. /dev/shm/runs: each epoch rewrites last.pth (400 MB for the 3D ResNet-18)
logs=$(realpath -m "${LOG_DIR:-$root/benchmarks/runs/gpu_logs}")
cd "$root"  # paths above are absolute, so relative ones meant the caller's directory
mkdir -p "$logs"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1  # many processes share the CPU cores that feed the GPU
common=(--device "$device" --seed-workers 3 --data-dir "$data")

# "protocol dataset size model [options]", longest first
rows=("protocol adrenalmnist3d 28 resnet18" "protocol adrenalmnist3d 28 focusnet" "protocol pneumoniamnist 28 focusnet"
      "protocol pneumoniamnist 28 resnet18" "protocol breastmnist 28 resnet18")
for size in 28 64 128; do
    rows+=("protocol synth-lesion $size focusnet" "protocol synth-lesion $size resnet18"
           "protocol synth-lesion $size focusnet --option fovea_scaling=pixels --option saliency=2")
    [ "$size" -gt 28 ] && rows+=("protocol synth-lesion $size focusnet --option glance_size=$size")  # the glance sees every pixel
done
# Do the saccades earn a share once they cannot slow learning (gated readout), against no saccades at all?
rows+=("protocol synth-lesion 28 focusnet --option readout=gated" "protocol synth-lesion 28 focusnet --option num_saccades=0"
       "protocol synth-lesion 64 focusnet --option glance_size=64 --option readout=gated"
       "protocol synth-lesion 64 focusnet --option glance_size=64 --option num_saccades=0")
variants=("default (M+P+K, 2 saccades, predictive coding, suppression)" "0 saccades (glance only)" "1 saccade" "4 saccades"
          "no predictive coding" "no saccadic suppression" "M pathway only" "P pathway only" "K pathway only"
          "with bottom-up saliency (option)" "with step losses (option)" "gated readout (option)")
for variant in "${variants[@]}"; do  # "ablations dataset epochs variant": the epochs of the CPU rows already there
    rows+=("ablations pneumoniamnist 10 $variant" "ablations synth-lesion 15 $variant" "ablations breastmnist 10 $variant")
done

pids=() started=()
for row in "${rows[@]}"; do
    [[ $row =~ ${ONLY:-.} ]] || continue
    read -r script dataset number rest <<< "$row"  # number: the size (protocol) or the epochs (ablations)
    log="$logs/${script}_${dataset}_${number}_$(printf %s "$rest" | tr -c 'A-Za-z0-9' '_').log"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-6}" ]; do wait -n; done  # statuses are collected below
    if [ "$script" = protocol ]; then
        read -r model options <<< "$rest"
        row_epochs=$epochs; [[ $dataset == synth-* ]] && row_epochs=$synth_epochs
        # shellcheck disable=SC2086  # options are whole words: --option key=value
        "${PYTHON:-python3}" benchmarks/protocol.py --datasets "$dataset" --size "$number" --models "$model" $options \
            --epochs "$row_epochs" --output-dir "$runs" "${common[@]}" > "$log" 2>&1 &
    else
        "${PYTHON:-python3}" benchmarks/ablations.py --datasets "$dataset" --variants "$rest" --epochs "$number" "${common[@]}" > "$log" 2>&1 &
    fi
    pids+=($!) started+=("$row")
done
failed=0
for i in "${!pids[@]}"; do  # wait PID returns each job's status, even one that ended long ago
    wait "${pids[$i]}" || { echo "row failed: ${started[$i]} (see $logs)"; failed=1; }
done
cat benchmarks/results/protocol.md
exit $failed
