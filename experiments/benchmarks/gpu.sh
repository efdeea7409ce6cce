#!/bin/bash
# The GPU runs, one script for one lease of a GPU machine (see README.md here).
#   OUT=/some/dir bash experiments/benchmarks/gpu.sh [PART ...]
# PARTs, in order of priority (default: all, about 11 minutes on one H100):
#   gpt6l   nanoGPT's 6-layer Shakespeare model, all 5000 steps, bfloat16 as nanoGPT
#           runs it on an A100; validation loss on the whole last 10% (about 7 min)
#   simclr  SimCLR ResNet-50 train step (2.5 min)
#   mae     MAE ViT-B/16 train step at mask ratio 0.75 and 0.0 (3.5 min)
# Writes each part's output to $OUT/*.txt (the 6-layer run also its metrics.jsonl and
# results.json). Needs jax with CUDA and this repo's
# requirements; SHAKESPEARE_DIR points at tiny-shakespeare/input.txt's folder (default
# $JAXSSL_DATA_DIR/tiny-shakespeare).
set -u
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
SHAKESPEARE_DIR=${SHAKESPEARE_DIR:-${JAXSSL_DATA_DIR:-}/tiny-shakespeare}

gpt6l() {
    local workdir=/tmp/gpu_sh_6l
    rm -rf $workdir
    timeout 480 $PY -m jaxssl.main --config=configs/nanogpt_shakespeare_6l.py --workdir=$workdir \
        --config.data.data_dir=$SHAKESPEARE_DIR --config.compute_dtype=bfloat16 \
        --config.log.progress_bar=false 2>&1 | tail -40 | tee $OUT/gpt6l.txt
    cp $workdir/metrics.jsonl $OUT/gpt6l_metrics.jsonl
    cp $workdir/results.json $OUT/gpt6l_results.json
}
simclr() {
    timeout 150 $PY experiments/benchmarks/simclr_step.py --devices=1 --dtype=bfloat16 \
        --model=resnet50 --image_size=224 --batch=128 --cifar_stem=false \
        --json=$OUT/simclr_resnet50.json 2>&1 | tee $OUT/simclr_resnet50.txt
}
mae() {
    timeout 200 $PY experiments/benchmarks/ab_step.py --config configs/mae_vit_base_imagenet.py \
        --variant 0.75:mae.mask_ratio=0.75 --variant 0.0:mae.mask_ratio=0.0 --steps 10 \
        --set data.name=synthetic:224x224x3 data.batch_size=128 compute_dtype=bfloat16 \
        2>&1 | tee $OUT/mae_vit_base.txt
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  $PY -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"; } 2>&1 | tee $OUT/versions.txt
for part in ${@:-gpt6l simclr mae}; do
    case $part in
        gpt6l|simclr|mae) echo "== $part $(date -u +%T)"; $part ;;
        *) echo "unknown part '$part'; valid: gpt6l simclr mae" >&2; exit 2 ;;
    esac
done
