#!/usr/bin/env bash
# GPU check of full finetuning (issue 4): the paper's recipe on the default backbone
# (EfficientNet-Lite0) and the default BiLAF selection (B=1000, seed 0), a few epochs; prints the
# device, images/s of the training steps and peak GPU memory per epoch. Runs on CPU too (slowly).
#   bash bench/gpu_check.sh            # EPOCHS=3 TOTAL_BATCH=512 by default
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-3}
TOTAL_BATCH=${TOTAL_BATCH:-512}
OUT=${OUT:-/tmp/bilaf_gpu_check}
make -s .venv/.installed data
export PATH="$PWD/.venv/bin:$PATH"
selection=results/fmnist10k/selection/bilaf/B1000_s0.json
features=results/fmnist10k/features/tf_efficientnet_lite0_64px
snakemake --cores all --quiet rules "$selection"
python -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
rm -rf "$OUT" && mkdir -p "$OUT"
bilaf finetune-full --source fashion_mnist --raw resources/fashion_mnist \
  --features "$features/pool.zarr" --test-features "$features/test.zarr" \
  --selection "$selection" --backbone tf_efficientnet_lite0 --weights efficientnet_lite0_package \
  --n-classes 10 --epochs "$EPOCHS" --total-batch "$TOTAL_BATCH" --eval-every "$EPOCHS" \
  --seed 0 --checkpoint-dir "$OUT" --threads 8 --out "$OUT/model.npz" 2>&1 | grep '^\[finetune\]'
