#!/bin/bash
# Lesion-probe variants in parallel on one GPU (benchmarks/lesion_probe.py); logs to $OUT or /tmp/sweep.
#   FOCUSNET_DATA_DIR=/tmp/data EPOCHS=20 bash benchmarks/lesion_sweep.sh
out=${OUT:-/tmp/sweep}; mkdir -p $out
E=${EPOCHS:-20}
run() { name=$1; shift; python3 benchmarks/lesion_probe.py --device ${DEVICE:-cuda} --n-train 4000 --epochs $E "$@" > $out/$name.log 2>&1 & }
run cnn --model cnn
run default
run glance16 --opts '{"glance_size":16}'
run glance_only --opts '{"num_saccades":0,"glimpse_size":28}'
run no_aux --aux 0
wait
grep -h RESULT $out/*.log
