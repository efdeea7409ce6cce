#!/usr/bin/env bash
# The scale table's compiles, one at a time (each takes minutes to tens of minutes on a
# 2-core CPU): python -m jaxssl.aot for each (name, config, topology, overrides) below,
# its report in results/NAME.txt and its fields in results/NAME.json. Run from the repo
# root: bash experiments/scaling/run.sh [NAME ...] (default: all).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=experiments/scaling/results
declare -A RUNS=(
  [mae_vit_large_v5p128]="configs/scale/mae_vit_large.py --topology=v5p:4x4x4"
  [mae_vit_large_v5e256]="configs/scale/mae_vit_large.py --topology=v5e:16x16"
  [mae_vit_large_v4_128]="configs/scale/mae_vit_large.py --topology=v4:4x4x4"
  [simclr_resnet50_v5p128]="configs/scale/simclr_resnet50.py --topology=v5p:4x4x4"
  [simclr_resnet50_v5e256]="configs/scale/simclr_resnet50.py --topology=v5e:16x16"
  [simclr_resnet50_v4_128]="configs/scale/simclr_resnet50.py --topology=v4:4x4x4"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${!RUNS[@]}")
for name in "${names[@]}"; do
  read -r config rest <<< "${RUNS[$name]}"
  echo "== $name: python -m jaxssl.aot --config=$config $rest"
  python -m jaxssl.aot --config="$config" $rest --json="$out/$name.json" > "$out/$name.txt" 2>&1
  echo "exit $?" >> "$out/$name.txt"
done
