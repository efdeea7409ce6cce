#!/usr/bin/env bash
# Every experiment whose numbers a README quotes: the exact command that regenerates them.
#
#   JAXSSL_DATA_DIR=/path/to/data bash experiments/run_all.sh [NAME ...]   # from the repository root
#   bash experiments/run_all.sh --list                                      # names, README, cost
#
# With no NAME, runs every experiment, one after the other (days on a 2-core CPU: see
# --list). JAXSSL_DATA_DIR is the folder holding cifar10-jpeg/, fashion-mnist/, mnist/ and
# tiny-shakespeare/input.txt. Workdirs go to RUNS (default /tmp/jaxssl_runs), outside the
# repository; each experiment copies only its small logs (metrics.jsonl, results.json,
# results.md, config.json; never checkpoints) next to the README that quotes them, and
# writes run_info.txt there: the commit, the date, the load average and the wall clock.
# PYTHON picks the interpreter (default python). finetune_fmnist and finetune_cifar10 pass
# no data_dir: experiments/finetune/run.py uses its configs' data_dir as they are.
#
# Each README says which of its tables were regenerated on which commit (run_info.txt);
# the rest say "not rerun on the current code" and point here.
set -euo pipefail

RUNS=${RUNS:-/tmp/jaxssl_runs}
PYTHON=${PYTHON:-python}
DATA=${JAXSSL_DATA_DIR:-}

# name | README that quotes it | idle 2-core CPU cost, roughly
EXPERIMENTS="
quickstart        README.md (Quickstart table)                            1 min
quickstart_seed1  README.md (Quickstart table, seed 1)                    1 min
quickstart_ft     README.md, experiments/finetune/README.md (digits)      1-2 min
quickstart_ft_lr  experiments/finetune/README.md (learning rates, LP-FT)  1 min, after quickstart_ft
baby_gpt          experiments/language/README.md (nanoGPT baby GPT)       1 min
baby_gpt_bfloat16 experiments/language/README.md (the same, bfloat16 compute) 1 min
ul2               experiments/language/README.md (UL2)                    1 min
pali              experiments/language/README.md (PaLI digits)            0.5 min
pydoc             experiments/language/README.md (byte-level pydoc)       1 min
language_seed1    experiments/language/README.md (the four above, seed 1) 4 min
mim               experiments/mim/README.md (MAE vs SimMIM)               3 min
mim_seed1         experiments/mim/README.md (MAE vs SimMIM, seed 1)       3 min
mim_bench         experiments/mim/README.md (MAE step, mask 0.75 vs 0)    2 min
logits_memory     experiments/clip/README.md (contrastive/logits_memory.md) 1 min
clip              experiments/clip/README.md (CLIP vs SigLIP)             4 min
clip_seed1        experiments/clip/README.md (CLIP vs SigLIP, seed 1)     4 min
simclr_fmnist     experiments/simclr/README.md (SimCLR Fashion-MNIST)     3 min
simclr_fmnist_seed1 experiments/simclr/README.md (SimCLR Fashion-MNIST, seed 1) 3 min
simclr_fmnist_pixels experiments/simclr/README.md (raw-pixel kNN and probe) 1 min
contrastive       experiments/contrastive/README.md (SimCLR vs MoCo v3)   3 min
contrastive_seed1 experiments/contrastive/README.md (seed 1)              3 min
finetune_fmnist_10pct experiments/finetune/README.md (the 10% rows only)  4 min
finetune_fmnist   experiments/finetune/README.md (Fashion-MNIST tables)   15 min
finetune_fmnist_seed1 experiments/finetune/README.md (Fashion-MNIST, seed 1) 15 min
finetune_cifar10  experiments/finetune/README.md (CIFAR-10 table)         7 min
finetune_cifar10_seed1 experiments/finetune/README.md (CIFAR-10, seed 1)  7 min
gpt_6l            experiments/language/README.md (6-layer nanoGPT)        27 h (GPU: experiments/benchmarks/gpu.sh gpt6l)
gato              experiments/generalist/README.md (Gato, 900 steps)      6 min
gato_seed1        experiments/generalist/README.md (Gato, seed 1)         6 min
palm_e            experiments/generalist/README.md (PaLM-E stages)        33 min
palm_e_seed1      experiments/generalist/README.md (PaLM-E, seed 1)       33 min
pali_x            experiments/generalist/README.md (PaLI-X frames)        12 min
pali_x_seed1      experiments/generalist/README.md (PaLI-X, seed 1)       12 min
vs_pytorch        experiments/benchmarks/README.md (vs PyTorch tables)    20 min, needs TORCH_PYTHON; stop other jobs
vs_pytorch_float32  experiments/benchmarks/README.md (jaxssl vs PyTorch only) 8 min, needs TORCH_PYTHON; stop other jobs
vs_pytorch_bfloat16 experiments/benchmarks/README.md (bfloat16 compute)     8 min, needs TORCH_PYTHON; stop other jobs
xla_dot_options   experiments/benchmarks/README.md (bfloat16 and AMX)     2 min; stop other jobs
"

need_data() {
  if [ -z "$DATA" ]; then
    echo "run_all.sh: set JAXSSL_DATA_DIR to the folder that holds $1" >&2
    exit 2
  fi
}

# record NAME DEST CMD...: runs CMD, then writes DEST/run_info.txt (commit, date, load, wall clock).
record() {
  local name=$1 dest=$2
  shift 2
  mkdir -p "$RUNS" "$dest"
  local commit start load_start
  commit=$(git rev-parse --short HEAD)
  start=$(date +%s)
  load_start=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "== $name: $*" >&2
  "$@"
  {
    echo "experiment: $name"
    echo "commit: $commit$(git diff --quiet HEAD -- jaxssl configs || echo ' (with uncommitted changes)')"
    echo "started: $(date -u -d "@$start" +%FT%TZ)"
    echo "wall_clock_s: $(( $(date +%s) - start ))"
    echo "load_average_start: $load_start"
    echo "load_average_end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), nproc $(nproc)"
    echo "command: $*"
  } > "$dest/run_info.txt"
  anonymise "$dest"
}

# copy_logs WORKDIR DEST: the small files of one jaxssl.main workdir (the data root written
# as $JAXSSL_DATA_DIR, the run root as $RUNS, so the logs name no machine's folders).
copy_logs() {
  mkdir -p "$2"
  for f in metrics.jsonl results.json results.md config.json evaluation.json \
      random_init.json run_info.json handoff.txt; do
    if [ -f "$1/$f" ]; then cp "$1/$f" "$2/"; fi
  done
  anonymise "$2"
}

# main_run NAME CONFIG LOGS [--config.k=v ...]: jaxssl.main on CONFIG in a fresh
# $RUNS/NAME, recorded, with its small logs kept in LOGS.
main_run() {
  local name=$1 config=$2 logs=$3
  shift 3
  rm -rf "$RUNS/$name"
  record "$name" "$logs" "$PYTHON" -m jaxssl.main --config="$config" --workdir="$RUNS/$name" \
    "$@" --config.log.progress_bar=false
  copy_logs "$RUNS/$name" "$logs"
}

# paired_cifar10_run NAME EXPERIMENT OUT FIRST SECOND [--set KEY=VALUE ...]: the two methods of
# experiments/EXPERIMENT/run.py on $DATA/cifar10-jpeg in $RUNS/NAME, recorded in OUT/logs, each
# method's small logs kept in OUT/logs/METHOD, the tables and plot of its summarize.py in OUT.
paired_cifar10_run() {
  local name=$1 experiment=$2 out=$3 first=$4 second=$5 method
  shift 5
  record "$name" "$out/logs" \
    "$PYTHON" -m "experiments.$experiment.run" --runs "$RUNS/$name" \
      --set data.data_dir="$DATA/cifar10-jpeg" "$@"
  for method in "$first" "$second"; do copy_logs "$RUNS/$name/$method" "$out/logs/$method"; done
  "$PYTHON" -m "experiments.$experiment.summarize" --runs "$RUNS/$name" --out "$out"
}

# finetune_runs NAME ROOT RECORD_DIR OUT TITLE [run.py options]: experiments/finetune/run.py
# with its workdirs in ROOT, recorded in RECORD_DIR, each run's small logs kept in
# OUT/logs/RUN, the tables and plots in OUT (TITLE: the data set's name in them).
finetune_runs() {
  local name=$1 root=$2 record_dir=$3 out=$4 title=$5 d
  shift 5
  record "$name" "$record_dir" "$PYTHON" -m experiments.finetune.run --root="$root" "$@"
  for d in "$root"/*/; do copy_logs "$d" "$out/logs/$(basename "$d")"; done
  "$PYTHON" -m experiments.finetune.summarize --root="$root" --out="$out" --dataset="$title"
}

# mim_runs NAME OUT [--config.k=v ...]: experiments/mim/run.sh (MAE, then SimMIM) in $RUNS/NAME
# with its files in OUT, recorded in OUT/logs.
mim_runs() {
  local name=$1 out=$2 d
  shift 2
  record "$name" "$out/logs" \
    env PYTHON="$PYTHON" bash experiments/mim/run.sh "$RUNS/$name" "$out" "$@"
  for d in "$out"/logs/*/; do anonymise "$d"; done
}

# simclr_fmnist_run NAME OUT SEED_SETTING: SimCLR on $DATA/fashion-mnist in $RUNS/NAME, recorded
# in OUT with its config, its metrics.jsonl after the step-0 row (the same evaluation at
# initialisation) and its kNN and linear-probe curves. SEED_SETTING: seed=N.
simclr_fmnist_run() {
  local name=$1 out=$2 seed=$3 metric
  rm -rf "$RUNS/$name"
  record "$name" "$out" \
    "$PYTHON" -m jaxssl.main --config=configs/simclr_fashion_mnist.py --workdir="$RUNS/$name" \
      --config.data.data_dir="$DATA/fashion-mnist" --config.log.progress_bar=false \
      --config."$seed"
  "$PYTHON" -m experiments.simclr.random_init_eval --config=configs/simclr_fashion_mnist.py \
    --set data.data_dir="$DATA/fashion-mnist" --set "$seed" > "$out/metrics.jsonl"
  cat "$RUNS/$name/metrics.jsonl" >> "$out/metrics.jsonl"
  cp "$RUNS/$name/config.json" "$out/config.json"
  anonymise "$out"
  for metric in knn_top1 linear_probe_top1; do
    "$PYTHON" -m experiments.plot_curves --run "SimCLR ResNet-18/16, Fashion-MNIST=$out" \
      --metric "eval/$metric" --out "$out/${metric%_top1}_curve"
  done
}

# anonymise DIR: the data root -> $JAXSSL_DATA_DIR, the PyTorch interpreter -> $TORCH_PYTHON,
# the run root -> $RUNS in the text files under DIR (its READMEs excepted: their commands
# name RUNS on purpose).
anonymise() {
  local f
  while IFS= read -r -d '' f; do
    if [ -n "$DATA" ]; then sed -i "s#$DATA#\$JAXSSL_DATA_DIR#g" "$f"; fi
    if [ -n "${TORCH_PYTHON:-}" ]; then sed -i "s#$TORCH_PYTHON#\$TORCH_PYTHON#g" "$f"; fi
    sed -i "s#$RUNS#\$RUNS#g" "$f"
  done < <(find "$1" -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.txt' \) \
             ! -name README.md -print0)
}

# float32 and bfloat16 matmul rates under jaxssl's XLA:CPU options, XLA's defaults and each
# of XLA:CPU's other dot libraries, one process each (XLA reads XLA_FLAGS once per process).
xla_dot_option_rates() {
  "$PYTHON" -m experiments.benchmarks.matmul_rates
  local flags
  # YNNPACK claims dots by default, so the other libraries' options take them from it.
  # oneDNN's fusions also need --xla_cpu_use_onednn.
  local others="--xla_cpu_experimental_ynn_fusion_type=reduce" onednn="--xla_cpu_use_onednn=true"
  for flags in "" "$others" "$onednn" \
      "$others $onednn --xla_cpu_experimental_onednn_custom_call=true" \
      "$others $onednn --xla_cpu_experimental_onednn_fusion_type=dot" \
      "$others $onednn --xla_cpu_experimental_onednn_fusion_type=individual_dot" \
      "$others --xla_cpu_experimental_xnn_fusion_type=dot" \
      "--xla_cpu_experimental_ynn_fusion_type=dot"; do
    JAXSSL_CPU_XLA_DEFAULTS=off XLA_FLAGS="$flags" "$PYTHON" -m experiments.benchmarks.matmul_rates
  done
}

run_one() {
  case "$1" in
    quickstart)
      main_run quickstart configs/quickstart.py experiments/quickstart ;;
    quickstart_seed1)
      main_run quickstart_seed1 configs/quickstart.py experiments/quickstart/seed1 --config.seed=1 ;;
    quickstart_ft)
      local dest=experiments/finetune/quickstart
      rm -rf "$RUNS/quickstart_ft"
      record quickstart_ft "$dest" \
        "$PYTHON" -m jaxssl.pipeline_run --pretrain_config=configs/quickstart.py \
          --finetune_config=configs/quickstart_finetune.py --workdir="$RUNS/quickstart_ft" \
          --scratch.optim.base_lr=0.1
      cp "$RUNS/quickstart_ft/results.md" "$dest/results.md"
      cp "$RUNS/quickstart_ft/finetune/handoff.txt" "$dest/handoff.txt"
      anonymise "$dest"
      for run in pretrain finetune scratch; do copy_logs "$RUNS/quickstart_ft/$run" "$dest/logs/$run"; done
      cp "$RUNS/quickstart_ft/finetune/confusion.png" "$dest/confusion_finetune.png"
      cp "$RUNS/quickstart_ft/scratch/confusion.png" "$dest/confusion_scratch.png" ;;
    quickstart_ft_lr)
      # the other learning rates of the quickstart fine-tuning and LP-FT, from quickstart_ft's pretraining
      local pre="$RUNS/quickstart_ft/pretrain" run lr init
      [ -d "$pre/checkpoints" ] || { echo "run_all.sh: run quickstart_ft first" >&2; exit 2; }
      rm -rf "$RUNS/quickstart_ft_lr"
      for run in finetune_0.05 scratch_0.01 scratch_0.05 lp_ft_0.01; do
        lr=${run##*_}
        init=$pre; [ "${run%%_*}" = scratch ] && init=
        extra=(); [ "${run%_*}" = lp_ft ] && extra=(--config.finetune.mode=lp_ft \
          --config.finetune.lp_steps=50 --config.finetune.lp_base_lr=0.1)
        record "quickstart_ft_lr/$run" "experiments/finetune/quickstart/logs/lr/$run" \
          "$PYTHON" -m jaxssl.main --config="configs/quickstart_finetune.py${init:+:$init}" \
            --workdir="$RUNS/quickstart_ft_lr/$run" --config.optim.base_lr="$lr" "${extra[@]}" \
            --config.log.progress_bar=false
        copy_logs "$RUNS/quickstart_ft_lr/$run" "experiments/finetune/quickstart/logs/lr/$run"
      done ;;
    baby_gpt|baby_gpt_bfloat16)
      need_data tiny-shakespeare/input.txt
      main_run "$1" configs/nanogpt_baby_shakespeare.py "experiments/language/logs/$1" \
        --config.data.data_dir="$DATA/tiny-shakespeare" \
        $([ "$1" = baby_gpt_bfloat16 ] && echo --config.compute_dtype=bfloat16) ;;
    ul2)
      need_data tiny-shakespeare/input.txt
      main_run ul2 configs/lm_ul2_shakespeare.py experiments/language/logs/ul2 \
        --config.data.data_dir="$DATA/tiny-shakespeare" ;;
    pali)
      main_run pali configs/lm_pali_digits.py experiments/language/logs/pali ;;
    pydoc)
      main_run pydoc configs/lm_pydoc_quickstart.py experiments/language/logs/pydoc ;;
    language_seed1)
      need_data tiny-shakespeare/input.txt
      main_run baby_gpt_seed1 configs/nanogpt_baby_shakespeare.py \
        experiments/language/logs/baby_gpt_seed1 --config.seed=1 \
        --config.data.data_dir="$DATA/tiny-shakespeare"
      main_run ul2_seed1 configs/lm_ul2_shakespeare.py experiments/language/logs/ul2_seed1 \
        --config.seed=1 --config.data.data_dir="$DATA/tiny-shakespeare"
      main_run pali_seed1 configs/lm_pali_digits.py experiments/language/logs/pali_seed1 \
        --config.seed=1
      main_run pydoc_seed1 configs/lm_pydoc_quickstart.py experiments/language/logs/pydoc_seed1 \
        --config.seed=1 ;;
    mim)
      need_data fashion-mnist/
      mim_runs mim experiments/mim ;;
    mim_seed1)
      need_data fashion-mnist/
      mim_runs mim_seed1 experiments/mim/seed1 --config.seed=1 ;;
    mim_bench)
      need_data fashion-mnist/
      record mim_bench experiments/mim/logs/bench \
        sh -c '"$0" -m experiments.benchmarks.ab_step --config=configs/mae_fashion_mnist.py \
          --set data.data_dir="$1/fashion-mnist" \
          --variant 0.75:mae.mask_ratio=0.75 --variant 0.0:mae.mask_ratio=0.0 --steps 20 \
          > experiments/mim/logs/bench/mask_ratio.txt' "$PYTHON" "$DATA" ;;
    logits_memory)
      record logits_memory experiments/contrastive/logs/logits_memory \
        "$PYTHON" -m experiments.contrastive.logits_memory ;;
    clip)
      need_data cifar10-jpeg/
      paired_cifar10_run clip clip experiments/clip clip siglip ;;
    clip_seed1)
      need_data cifar10-jpeg/
      paired_cifar10_run clip_seed1 clip experiments/clip/seed1 clip siglip --set seed=1 ;;
    simclr_fmnist)
      need_data fashion-mnist/
      simclr_fmnist_run simclr_fmnist experiments/simclr seed=0 ;;
    simclr_fmnist_seed1)
      need_data fashion-mnist/
      simclr_fmnist_run simclr_fmnist_seed1 experiments/simclr/seed1 seed=1 ;;
    simclr_fmnist_pixels)
      need_data fashion-mnist/
      mkdir -p experiments/simclr/pixels
      record simclr_fmnist_pixels experiments/simclr/pixels \
        "$PYTHON" -m experiments.simclr.random_init_eval --config=configs/simclr_fashion_mnist.py \
          --set data.data_dir="$DATA/fashion-mnist" --pixels \
        | tee experiments/simclr/pixels/pixels.json ;;
    contrastive)
      need_data cifar10-jpeg/
      paired_cifar10_run contrastive contrastive experiments/contrastive simclr moco ;;
    contrastive_seed1)
      need_data cifar10-jpeg/
      paired_cifar10_run contrastive_seed1 contrastive experiments/contrastive/seed1 simclr moco \
        --set seed=1 ;;
    finetune_fmnist_10pct)
      # the central comparison alone: SimCLR pretraining, then SimCLR vs scratch at 10% of the labels
      need_data "fashion-mnist/ and mnist/"
      record finetune_fmnist_10pct experiments/finetune/logs \
        "$PYTHON" -m experiments.finetune.run --root="$RUNS/ft_fmnist" \
          --only=simclr_vit,simclr_full_10pct,scratch_full_10pct
      for run in simclr_vit simclr_full_10pct scratch_full_10pct; do
        copy_logs "$RUNS/ft_fmnist/$run" "experiments/finetune/logs/$run"
      done
      "$PYTHON" -m experiments.finetune.summarize --root="$RUNS/ft_fmnist" --out=experiments/finetune ;;
    finetune_fmnist)
      need_data "fashion-mnist/ and mnist/"
      finetune_runs finetune_fmnist "$RUNS/ft_fmnist" experiments/finetune/logs \
        experiments/finetune Fashion-MNIST ;;
    finetune_fmnist_seed1)
      need_data "fashion-mnist/ and mnist/"
      finetune_runs finetune_fmnist_seed1 "$RUNS/ft_fmnist_seed1" experiments/finetune/seed1 \
        experiments/finetune/seed1 Fashion-MNIST --seed=1 ;;
    finetune_cifar10)
      need_data cifar10-jpeg/
      finetune_runs finetune_cifar10 "$RUNS/ft_cifar10" experiments/finetune/cifar10 \
        experiments/finetune/cifar10 CIFAR-10 --dataset=cifar10 ;;
    finetune_cifar10_seed1)
      need_data cifar10-jpeg/
      finetune_runs finetune_cifar10_seed1 "$RUNS/ft_cifar10_seed1" \
        experiments/finetune/cifar10/seed1 experiments/finetune/cifar10/seed1 CIFAR-10 \
        --dataset=cifar10 --seed=1 ;;
    gpt_6l)
      need_data tiny-shakespeare/input.txt
      main_run gpt_6l configs/nanogpt_shakespeare_6l.py experiments/language/logs/gpt_6l \
        --config.data.data_dir="$DATA/tiny-shakespeare" ;;
    gato)
      need_data "tiny-shakespeare/ and mnist/"
      record gato experiments/generalist/logs/gato \
        "$PYTHON" -m experiments.generalist.gato --runs_dir="$RUNS/gato" ;;
    gato_seed1)
      need_data "tiny-shakespeare/ and mnist/"
      record gato_seed1 experiments/generalist/gato_seed1 \
        "$PYTHON" -m experiments.generalist.gato --runs_dir="$RUNS/gato_seed1" --set seed=1 \
          --out experiments/generalist/gato_seed1 ;;
    palm_e)
      need_data mnist/
      record palm_e experiments/generalist/logs/palm_e \
        "$PYTHON" -m experiments.generalist.palm_e --runs "$RUNS/palm_e"
      # the README's ridge probe of the canvas tokens: the canvas run's ViT, then as handed over
      for run in canvas encoder; do
        echo "== $run"
        "$PYTHON" -m experiments.generalist.canvas_probe --checkpoint "$RUNS/palm_e/$run"
      done > experiments/generalist/logs/palm_e/canvas_probe.txt ;;
    palm_e_seed1)
      need_data mnist/
      record palm_e_seed1 experiments/generalist/palm_e_seed1 \
        "$PYTHON" -m experiments.generalist.palm_e --runs "$RUNS/palm_e_seed1" --set seed=1 \
          --out experiments/generalist/palm_e_seed1 ;;
    pali_x)
      need_data mnist/
      record pali_x experiments/generalist/logs/pali_x \
        "$PYTHON" -m experiments.generalist.pali_x --runs="$RUNS/pali_x" ;;
    pali_x_seed1)
      need_data mnist/
      record pali_x_seed1 experiments/generalist/pali_x_seed1 \
        "$PYTHON" -m experiments.generalist.pali_x --runs="$RUNS/pali_x_seed1" --set seed=1 \
          --out experiments/generalist/pali_x_seed1 ;;
    vs_pytorch)
      need_data tiny-shakespeare/
      # Two commands: SimCLR's workers are the largest (about 5-8 GiB each), and with the
      # Transformer switch as well they outgrew the 24 GiB VM (a worker killed, 2026-12-06).
      record vs_pytorch experiments/benchmarks/results \
        "$PYTHON" -m experiments.benchmarks.vs_pytorch --torch_python="${TORCH_PYTHON:?set TORCH_PYTHON}" \
          --rounds=5 --workloads=mae,baby_gpt \
          --jax_variant="vector width 256=--xla_cpu_prefer_vector_width=256" \
          --jax_env="XLA defaults=JAXSSL_CPU_XLA_DEFAULTS=off" \
          --jax_env="folded attention transposes=JAXSSL_BENCH_FOLDED_ATTENTION_TRANSPOSES=on" \
          --out=experiments/benchmarks/results \
          | tee experiments/benchmarks/results/vs_pytorch.log
      mkdir -p experiments/benchmarks/results/simclr
      record vs_pytorch_simclr experiments/benchmarks/results/simclr \
        "$PYTHON" -m experiments.benchmarks.vs_pytorch --torch_python="$TORCH_PYTHON" \
          --rounds=5 --workloads=simclr \
          --jax_variant="vector width 256=--xla_cpu_prefer_vector_width=256" \
          --jax_env="XLA defaults=JAXSSL_CPU_XLA_DEFAULTS=off" \
          --out=experiments/benchmarks/results/simclr \
          | tee experiments/benchmarks/results/simclr/vs_pytorch.log ;;
    vs_pytorch_float32|vs_pytorch_bfloat16)
      need_data tiny-shakespeare/
      # jaxssl against PyTorch, in float32, or with bfloat16 compute and also jaxssl without
      # its CPU bfloat16 paths (layers.NARROW_FLOATS).
      local dtype=${1#vs_pytorch_}
      local options=()
      [ "$dtype" = bfloat16 ] && options=(--bfloat16
        "--jax_env=bfloat16 paths undone=JAXSSL_BENCH_NARROW_PRODUCTS=on")
      mkdir -p "experiments/benchmarks/results/dtypes/$dtype"
      record "$1" "experiments/benchmarks/results/dtypes/$dtype" \
        "$PYTHON" -m experiments.benchmarks.vs_pytorch --torch_python="${TORCH_PYTHON:?set TORCH_PYTHON}" \
          --rounds=5 --workloads=simclr,mae,baby_gpt "${options[@]}" \
          --out="experiments/benchmarks/results/dtypes/$dtype" \
          | tee "experiments/benchmarks/results/dtypes/$dtype/vs_pytorch.log" ;;
    xla_dot_options)
      mkdir -p experiments/benchmarks/results/dtypes/xla_dot_options
      record xla_dot_options experiments/benchmarks/results/dtypes/xla_dot_options \
        xla_dot_option_rates | tee experiments/benchmarks/results/dtypes/xla_dot_options/matmul_rates.log ;;
    *)
      echo "run_all.sh: unknown experiment '$1'; known:" >&2
      echo "$EXPERIMENTS" | awk 'NF {print "  " $1}' >&2
      exit 2 ;;
  esac
}

if [ "${1:-}" = "--list" ]; then
  echo "$EXPERIMENTS" | sed '/^$/d'
  exit 0
fi
# A wrong interpreter would fail only inside the first experiment, after its log was truncated.
if ! "$PYTHON" -c "import jax, jaxssl" 2>/dev/null; then
  echo "run_all.sh: PYTHON=$PYTHON cannot import jax and jaxssl; set PYTHON to the environment's python" >&2
  exit 2
fi
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(echo "$EXPERIMENTS" | awk 'NF {print $1}')
fi
for name in "${names[@]}"; do
  run_one "$name"
done
