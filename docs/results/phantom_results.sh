#!/usr/bin/env bash
# Train the bundles on phantoms and evaluate them on held-out phantoms: the figures quoted in
# README.md and docs/guide.md. About 40 minutes on 2 CPU cores. Usage:
#   bash docs/results/phantom_results.sh [WORK_DIR]      (default /tmp/seglab-results)
# Everything is logged in WORK_DIR/mlruns; `seglab ui --store WORK_DIR/mlruns` shows it.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=.venv/bin/seglab
W=${1:-/tmp/seglab-results}
mkdir -p "$W"
store=(--store "$W/mlruns")

# --- study A: three networks on 6 training phantoms of 512 px, 2 held-out test phantoms --------
[ -d "$W/lung-train" ] || $S phantom lung "$W/lung-train" --count 6 --size 512 --seed 0
[ -d "$W/lung-test" ] || $S phantom lung "$W/lung-test" --count 2 --size 512 --seed 100
lung=(--data "$W/lung-train" --eval-data "$W/lung-test" "${store[@]}"
      --set epochs=30 --set val_interval=5 --set loss_name=dicece
      --set optimizer_name=adam --set learning_rate=0.001)
for net in unet segnet deeplabv3plus; do
  $S train lung "${lung[@]}" --set network_name=$net --output "$W/models-$net" \
     --register lung-$net | tee "$W/lung-$net.txt"
done
# the study's own loss and optimiser (MSE on one-hot targets, SGD, lr 0.01) for comparison
$S train lung --data "$W/lung-train" --eval-data "$W/lung-test" "${store[@]}" \
   --set epochs=30 --set val_interval=5 --output "$W/models-unet-mse" \
   --register lung-unet-study-defaults | tee "$W/lung-unet-mse.txt"

# --- study B: mitochondria, 1/3/5 adjacent slices; 2 cell-A stacks (train, val), cell B test --
[ -d "$W/mito-train" ] || $S phantom sem "$W/mito-train" --cell A --count 2 --shape 32 256 256
[ -d "$W/mito-test" ] || $S phantom sem "$W/mito-test" --cell B --shape 32 256 256 --seed 10
for n in 1 3 5; do
  $S train mito --data "$W/mito-train" --eval-data "$W/mito-test" "${store[@]}" \
     --set num_slices=$n --set epochs=30 --set iterations_per_epoch=10 --set val_interval=5 \
     --output "$W/models-mito-${n}fm" --register mito-${n}fm | tee "$W/mito-${n}fm.txt"
done
