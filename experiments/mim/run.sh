#!/usr/bin/env bash
# MAE and SimMIM on Fashion-MNIST, one after the other, then loss curves, pictures, results.
#
#   JAXSSL_DATA_DIR=/path/to/data bash experiments/mim/run.sh [RUNS_DIR [OUT_DIR [--config.k=v ...]]]
#
# From the repository root; RUNS_DIR defaults to /tmp/mim_runs, OUT_DIR to experiments/mim.
# JAXSSL_DATA_DIR is the folder that holds fashion-mnist/. Workdirs stay in RUNS_DIR; only
# small result files (PNG/MD/JSON and each run's metrics.jsonl, results.json, config.json
# under logs/) are copied to OUT_DIR. Further arguments go to both runs (e.g.
# --config.seed=1).
set -euo pipefail
RUNS=${1:-/tmp/mim_runs}
HERE=${2:-experiments/mim}
shift $(( $# < 2 ? $# : 2 ))
DATA=${JAXSSL_DATA_DIR:?set JAXSSL_DATA_DIR to the folder that holds fashion-mnist/}
PYTHON=${PYTHON:-python}
mkdir -p "$RUNS"
rm -f "$RUNS/runtimes.txt"
for name in mae simmim; do
  workdir="$RUNS/${name}_fashion_mnist"
  rm -rf "$workdir"
  start=$(date +%s)
  echo "$name: commit $(git rev-parse --short HEAD), load average at start $(cut -d' ' -f1-3 /proc/loadavg)" \
      | tee -a "$RUNS/runtimes.txt"
  "$PYTHON" -m jaxssl.main --config="configs/${name}_fashion_mnist.py" --workdir="$workdir" \
      --config.data.data_dir="$DATA/fashion-mnist" \
      --config.log.progress_bar=false "$@" > "$workdir.log" 2>&1
  echo "$name: $(( $(date +%s) - start )) s wall-clock (training + both evaluations)," \
      "load average at end $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUNS/runtimes.txt"
  tail -n 3 "$workdir.log"
  mkdir -p "$HERE/logs/$name"
  cp "$workdir"/{metrics.jsonl,results.json,config.json} "$HERE/logs/$name/"
  cp "$(ls "$workdir"/pictures/*.png | tail -n 1)" "$HERE/${name}_reconstructions.png"
  "$PYTHON" -m experiments.plot_curves --run "$name=$workdir" --metric loss --no-percent \
      --out "$HERE/${name}_loss"
done
cp "$RUNS/runtimes.txt" "$HERE/logs/runtimes.txt"
"$PYTHON" -m experiments.mim.summarize "$RUNS/mae_fashion_mnist" "$RUNS/simmim_fashion_mnist" \
    --out "$HERE/results.json"
