#!/bin/bash
# The GPU benchmarks, one script for one lease of a GPU machine (see README.md here).
#   OUT=/some/dir bash experiments/benchmarks/gpu.sh
# Writes each benchmark's output to $OUT/*.txt. Needs jax with CUDA, torch (for the
# PyTorch baseline) and this repo's requirements.
set -u
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
  $PY -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)"; } 2>&1 | tee $OUT/versions.txt
timeout 150 $PY experiments/language/compare_pytorch.py --torch_python=$PY --rounds=2 --steps=100 --warmup=20 \
    --set data.data_dir=${SHAKESPEARE_DIR:-../shared/data/tiny-shakespeare} 2>&1 | tee $OUT/baby_gpt.txt
timeout 150 $PY experiments/benchmarks/simclr_step.py --devices=1 --dtype=bfloat16 --model=resnet50 \
    --image_size=224 --batch=128 --cifar_stem=false --json=$OUT/simclr_resnet50.json 2>&1 | tee $OUT/simclr_resnet50.txt
timeout 200 $PY experiments/mim/bench_mae_step.py --config configs/mae_vit_base_imagenet.py --steps 10 \
    --set data.name=synthetic:224x224x3 data.batch_size=128 compute_dtype=bfloat16 2>&1 | tee $OUT/mae_vit_base.txt
