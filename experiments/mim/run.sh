#!/usr/bin/env bash
# MAE and SimMIM on Fashion-MNIST, one after the other, then loss curves, pictures, results.
#
#   bash experiments/mim/run.sh [RUNS_DIR]     # from the repository root; default /tmp/mim_runs
#
# Workdirs stay in RUNS_DIR; only small result files (PNG/MD/JSON) are copied here.
set -euo pipefail
RUNS=${1:-/tmp/mim_runs}
HERE=experiments/mim
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
for name in mae simmim; do
  workdir="$RUNS/${name}_fashion_mnist"
  rm -rf "$workdir"
  start=$(date +%s)
  "$PYTHON" -m jaxssl.main --config="configs/${name}_fashion_mnist.py" --workdir="$workdir" \
      --config.log.progress_bar=false > "$workdir.log" 2>&1
  echo "$name: $(( $(date +%s) - start )) s wall-clock (training + both evaluations)" \
      | tee -a "$RUNS/runtimes.txt"
  tail -n 3 "$workdir.log"
  cp "$(ls "$workdir"/pictures/*.png | tail -n 1)" "$HERE/${name}_reconstructions.png"
  "$PYTHON" -m experiments.plot_curves --run "$name=$workdir" --metric loss --no-percent \
      --out "$HERE/${name}_loss"
done
"$PYTHON" -m experiments.mim.summarize "$RUNS/mae_fashion_mnist" "$RUNS/simmim_fashion_mnist" \
    --out "$HERE/results.json"
