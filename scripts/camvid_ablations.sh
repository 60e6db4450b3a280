#!/usr/bin/env bash
# CamVid ablations under one CPU budget (10 epochs of width 32, about 10 minutes each on the
# 2-core development machine): the original recipe, then each change of experiment=camvid_cpu
# added in turn. Results: README, "CamVid results". Usage: scripts/camvid_ablations.sh [DATA_ROOT]
set -euo pipefail
root=${1:-../shared/datasets/camvid}
py=${PYTHON:-.venv/bin/python}
common=(experiment=camvid_cpu "data.root=$root" trainer.max_epochs=10 trainer.check_val_every_n_epoch=1
        trainer.max_time=00:00:11:00 trainer.enable_progress_bar=false)
crop_only='data.train_transforms=[{_target_:albumentations.RandomCrop,height:256,width:256}]'
original=(loss=dice loss.class_weights=null scheduler=none model.optimizer._target_=torch.optim.Adam
          model.optimizer.lr=1e-3 model.optimizer.weight_decay=0)

run() { echo "== $*"; "$py" -m seg.train "${common[@]}" "$@" task_name=camvid_ablation; }

run "${original[@]}" "$crop_only"                                                     # A: original recipe
run loss=dice_ce loss.class_weights=null scheduler=none model.optimizer._target_=torch.optim.Adam \
    model.optimizer.lr=1e-3 model.optimizer.weight_decay=0 "$crop_only"               # B: + Dice + CE
run scheduler=none model.optimizer._target_=torch.optim.Adam model.optimizer.lr=1e-3 \
    model.optimizer.weight_decay=0 "$crop_only"                                       # C: + class weights
run scheduler=none model.optimizer._target_=torch.optim.Adam model.optimizer.lr=1e-3 \
    model.optimizer.weight_decay=0                                                    # D: + augmentation
run                                                                                   # E: + AdamW 2e-3, cosine
run model.net.base_channels=16 trainer.max_epochs=20                                  # F: width 16, 20 epochs
