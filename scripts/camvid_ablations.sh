#!/usr/bin/env bash
# CamVid ablations under one CPU budget (10 epochs of width 32, about 9 minutes each on the
# 2-core Intel Xeon with AMX): the original recipe, then each change of experiment=camvid_cpu_scratch
# added in turn. Results: docs/camvid.md. Rows A-O were run with the camvid_cpu_scratch of their time (random
# crops only, Dice + CE), which the rows below pin; the recipe chosen since is in scripts/camvid_disjoint.sh.
# Rows G and H are 70 epochs of cosine decay with and without augmentation (an hour each); row I
# is experiment=camvid_cpu_scratch as shipped (a 60-minute budget, the learning rate decayed linearly to
# zero when it ends).
# Rows J-O test the model options against experiment=camvid_cpu_scratch itself, 10 epochs with the
# learning rate decayed to zero over them (a step budget, so every row trains the same steps on
# any machine): J is the recipe, each later row changes one thing. Flip TTA is scored on J's
# model with seg.evaluate (docs/camvid.md).
# Usage: scripts/camvid_ablations.sh [DATA_ROOT] [ROWS]   (ROWS: letters, default ABCDE)
set -euo pipefail
root=${1:-../shared/datasets/camvid}
rows=${2:-ABCDE}
py=${PYTHON:-.venv/bin/python}
common=(experiment=camvid_cpu_scratch "data.root=$root" trainer.enable_progress_bar=false task_name=camvid_ablation)
short=(trainer.max_epochs=10 trainer.check_val_every_n_epoch=1 trainer.max_time=00:00:11:00)
crop_only='data.train_transforms=[{_target_:albumentations.RandomCrop,height:256,width:256}]'
# data=camvid's own pipeline: random scale, pad, crop, flip, colour jitter
augment='data.train_transforms=[{_target_:albumentations.RandomScale,scale_limit:[-0.5,0.5],p:1.0},'\
'{_target_:albumentations.PadIfNeeded,min_height:256,min_width:256,border_mode:0,fill:0,fill_mask:11},'\
'{_target_:albumentations.RandomCrop,height:256,width:256},{_target_:albumentations.HorizontalFlip,p:0.5},'\
'{_target_:albumentations.ColorJitter,brightness:0.2,contrast:0.2,saturation:0.2,hue:0.02,p:0.5}]'
cosine70=(scheduler=cosine trainer.max_epochs=70 trainer.max_time=00:00:58:00)
constant_adam=(scheduler=none model.optimizer._target_=torch.optim.Adam model.optimizer.lr=1e-3
               model.optimizer.weight_decay=0)

recipe10=(trainer.max_epochs=10 trainer.check_val_every_n_epoch=1 trainer.max_time=null)
ce=loss=dice_ce   # the loss of camvid_cpu_scratch when these rows were run

run() { echo "== row $1: ${*:2}"; "$py" -m seg.train "${common[@]}" "${@:2}"; }

for row in $(echo "$rows" | grep -o .); do
  case $row in
    A) run A "${short[@]}" loss=dice "${constant_adam[@]}" "$crop_only" ;;           # original recipe
    B) run B "${short[@]}" $ce "${constant_adam[@]}" "$crop_only" ;;                     # + Dice + CE
    C) run C "${short[@]}" $ce loss.class_weights=median_frequency "${constant_adam[@]}" "$crop_only" ;;
    D) run D "${short[@]}" $ce "${constant_adam[@]}" "$augment" ;;                       # B + augmentation
    E) run E "${short[@]}" $ce scheduler=cosine model.optimizer.lr=2e-3 "$augment" ;;    # D + AdamW, cosine
    F) run F trainer.max_epochs=20 trainer.check_val_every_n_epoch=1 trainer.max_time=00:00:11:00 \
             $ce scheduler=cosine model.net.base_channels=16 model.optimizer.lr=2e-3 "$augment" ;;  # E, width 16
    G) run G "${cosine70[@]}" $ce "$augment" ;;                                          # H + augmentation
    H) run H "${cosine70[@]}" $ce "$crop_only" ;;                                                     # 70 epochs of cosine
    I) run I ;;                                                                      # camvid_cpu_scratch as shipped
    J) run J "${recipe10[@]}" $ce "$crop_only" ;;                                                     # camvid_cpu_scratch, 10 epochs
    K) run K "${recipe10[@]}" $ce "$crop_only" model.net.upsample=bilinear ;;                         # J, bilinear decoder
    L) run L "${recipe10[@]}" "$crop_only" loss=combo loss.weights.ce=0 loss.weights.focal=1 ;;   # J, Dice + focal
    M) run M "${recipe10[@]}" "$crop_only" loss=dice_lovasz ;;  # J, Dice + Lovasz
    N) run N "${recipe10[@]}" $ce "$crop_only" callbacks.ema.decay=0.99 ;;                            # J, EMA of the weights
    O) run O "${recipe10[@]}" $ce "$crop_only" model=smp ~model.net.base_channels model.net.arch=Unet \
             model.net.encoder_name=resnet18 model.net.encoder_weights=null ;;        # smp Unet/resnet18
    *) echo "unknown row $row (use letters A-O)" >&2; exit 2 ;;
  esac
done
