#!/usr/bin/env bash
# The scale table's compiles, one at a time (each takes minutes to tens of minutes on a
# 2-core CPU): python -m jaxssl.aot for each (name, config, topology, overrides) below,
# its report in results/NAME.txt and its fields in results/NAME.json. Run from the repo
# root: bash experiments/scaling/run.sh [NAME ...] (default: all), or
# bash experiments/scaling/run.sh calibrate (calibration.json and .txt).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=experiments/scaling/results
declare -A RUNS=(
  [mae_vit_large_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4"
  [mae_vit_large_v5e256]="configs/scale/mae_vit_large.py --topology=v5e:16x16"
  [mae_vit_large_v4_128]="configs/scale/mae_vit_large.py --topology=v4:4x4x4"
  [mae_vit_large_unrolled_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4 --config.model.scan_blocks=False --config.model.remat=False"
  [mae_vit_large_data8_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4 --config.mesh.data=8 --config.mesh.fsdp=8"
  [simclr_resnet50_v5p128]="configs/scale/simclr_resnet50.py --topology=v5p:4x4x4"
  [simclr_resnet50_v5e256]="configs/scale/simclr_resnet50.py --topology=v5e:16x16"
  [simclr_resnet50_v4_128]="configs/scale/simclr_resnet50.py --topology=v4:4x4x4"
  [mae_vit_huge_v5p128]="configs/scale/mae_vit_huge.py --topology=v5p:4x4x4"
  [mae_vit_huge_v5e256]="configs/scale/mae_vit_huge.py --topology=v5e:16x16"
  [mae_vit_huge_v4_128]="configs/scale/mae_vit_huge.py --topology=v4:4x4x4"
  [finetune_vit_huge_448_v5p128]="configs/scale/finetune_vit_huge_448.py --topology=v5p:4x4x4"
  [finetune_vit_huge_448_v5e256]="configs/scale/finetune_vit_huge_448.py --topology=v5e:16x16"
  [finetune_vit_huge_448_v4_128]="configs/scale/finetune_vit_huge_448.py --topology=v4:4x4x4"
  [siglip_vit_base_v5p128]="configs/scale/siglip_vit_base.py --topology=v5p:4x4x4"
  [siglip_vit_base_v5e256]="configs/scale/siglip_vit_base.py --topology=v5e:16x16"
  [siglip_vit_base_v4_128]="configs/scale/siglip_vit_base.py --topology=v4:4x4x4"
  [t5_xl_ul2_v5p128]="configs/scale/t5_xl_ul2.py --topology=v5p:4x4x4"
  [t5_xl_ul2_v5e256]="configs/scale/t5_xl_ul2.py --topology=v5e:16x16"
  [t5_xl_ul2_v4_128]="configs/scale/t5_xl_ul2.py --topology=v4:4x4x4"
  [t5_xl_ul2_flash_v5p128]="configs/scale/t5_xl_ul2.py --topology=v5p:4x4x4 --config.lm.attention_impl=flash"
  [t5_xl_ul2_relative_v5p128]="configs/scale/t5_xl_ul2.py --topology=v5p:4x4x4 --config.lm.posemb=relative"
  [t5_xl_ul2_relative_flash_v5p128]="configs/scale/t5_xl_ul2.py --topology=v5p:4x4x4 --config.lm.posemb=relative --config.lm.attention_impl=flash"
  [prefix_lm_8b_v5p128]="configs/scale/prefix_lm_8b.py --topology=v5p:4x4x4"
  [prefix_lm_8b_v5e256]="configs/scale/prefix_lm_8b.py --topology=v5e:16x16"
  [prefix_lm_8b_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4"
  [prefix_lm_8b_accum8_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.grad_accum_steps=8"
  [prefix_lm_8b_accum16_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.grad_accum_steps=16"
  [prefix_lm_8b_unrolled_rows256_v5p128]="configs/scale/prefix_lm_8b.py --topology=v5p:4x4x4 --config.grad_accum_steps=1 --config.data.batch_size=256 --config.lm.scan_layers=False"
  [prefix_lm_8b_flash_v5p128]="configs/scale/prefix_lm_8b.py --topology=v5p:4x4x4 --config.lm.attention_impl=flash"
  [prefix_lm_8b_flash_v5e256]="configs/scale/prefix_lm_8b.py --topology=v5e:16x16 --config.lm.attention_impl=flash"
  [prefix_lm_8b_flash_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.lm.attention_impl=flash"
  [prefix_lm_8b_flash_accum8_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.lm.attention_impl=flash --config.grad_accum_steps=8"
  [prefix_lm_8b_xent256_v5p128]="configs/scale/prefix_lm_8b.py --topology=v5p:4x4x4 --config.lm.cross_entropy_chunk=256"
  [prefix_lm_8b_xent256_v5e256]="configs/scale/prefix_lm_8b.py --topology=v5e:16x16 --config.lm.cross_entropy_chunk=256"
  [prefix_lm_8b_xent256_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.lm.cross_entropy_chunk=256"
  [prefix_lm_8b_flash_xent256_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.lm.attention_impl=flash --config.lm.cross_entropy_chunk=256"
  [prefix_lm_8b_flash_xent256_v5p128]="configs/scale/prefix_lm_8b.py --topology=v5p:4x4x4 --config.lm.attention_impl=flash --config.lm.cross_entropy_chunk=256"
  [prefix_lm_8b_flash_xent128_v4_128]="configs/scale/prefix_lm_8b.py --topology=v4:4x4x4 --config.lm.attention_impl=flash --config.lm.cross_entropy_chunk=128"
  [mae_vit_large_flash_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4 --config.model.attention_impl=flash"
  [mae_vit_large_flash_unrolled_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4 --config.model.attention_impl=flash --config.model.scan_blocks=False --config.model.remat=False"
  [pali_vit_large_3b_v5p128]="configs/scale/pali_vit_large_3b.py --topology=v5p:4x4x4"
  [pali_vit_large_3b_v5e256]="configs/scale/pali_vit_large_3b.py --topology=v5e:16x16"
  [pali_vit_large_3b_v4_128]="configs/scale/pali_vit_large_3b.py --topology=v4:4x4x4"
)
if [ "${1:-}" = calibrate ]; then  # the cost model's ceilings (experiments/scaling/calibrate.py)
  python -m experiments.scaling.calibrate --json=experiments/scaling/calibration.json \
    > experiments/scaling/calibration.txt
  exit
fi
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!RUNS[@]}")
for name in "${names[@]}"; do
  read -r config rest <<< "${RUNS[$name]}"
  echo "== $name: python -m jaxssl.aot --config=$config $rest"
  python -m jaxssl.aot --config="$config" $rest --json="$out/$name.json" > "$out/$name.txt" 2>&1
  echo "exit $?" >> "$out/$name.txt"
done
