#!/usr/bin/env bash
# CamVid ablations under one CPU budget (10 epochs of width 32, about 9 minutes each on the
# 2-core development machine): the original recipe, then each change of experiment=camvid_cpu
# added in turn. Results: README, "CamVid results".
# Rows G and H are the full 60-minute recipe with and without augmentation (an hour each).
# Usage: scripts/camvid_ablations.sh [DATA_ROOT] [ROWS]   (ROWS: letters, default ABCDE)
set -euo pipefail
root=${1:-../shared/datasets/camvid}
rows=${2:-ABCDE}
py=${PYTHON:-.venv/bin/python}
common=(experiment=camvid_cpu "data.root=$root" trainer.enable_progress_bar=false task_name=camvid_ablation)
short=(trainer.max_epochs=10 trainer.check_val_every_n_epoch=1 trainer.max_time=00:00:11:00)
crop_only='data.train_transforms=[{_target_:albumentations.RandomCrop,height:256,width:256}]'
constant_adam=(scheduler=none model.optimizer._target_=torch.optim.Adam model.optimizer.lr=1e-3
               model.optimizer.weight_decay=0)

run() { echo "== row $1: ${*:2}"; "$py" -m seg.train "${common[@]}" "${@:2}"; }

for row in $(echo "$rows" | grep -o .); do
  case $row in
    A) run A "${short[@]}" loss=dice "${constant_adam[@]}" "$crop_only" ;;           # original recipe
    B) run B "${short[@]}" "${constant_adam[@]}" "$crop_only" ;;                     # + Dice + CE
    C) run C "${short[@]}" loss.class_weights=median_frequency "${constant_adam[@]}" "$crop_only" ;;
    D) run D "${short[@]}" "${constant_adam[@]}" ;;                                  # B + augmentation
    E) run E "${short[@]}" model.optimizer.lr=2e-3 ;;                                # D + AdamW, cosine
    F) run F trainer.max_epochs=20 trainer.check_val_every_n_epoch=1 trainer.max_time=00:00:11:00 \
             model.net.base_channels=16 model.optimizer.lr=2e-3 ;;                   # E, width 16, 20 epochs
    G) run G ;;                                                                      # camvid_cpu as shipped
    H) run H "$crop_only" ;;                                                         # G, crop only
    *) echo "unknown row $row (use letters A-H)" >&2; exit 2 ;;
  esac
done
