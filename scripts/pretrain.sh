#!/usr/bin/env bash
# Quick start: GPA-pretrain a small ViT on Fashion-MNIST, offline, in about 5 minutes on 2 CPU cores, then draw
# its GPA figures, evaluate its encoder (k-NN against a random initialisation) and measure whether its masks find
# the garment on held-out images. The teacher is the student itself (no extra weights) and Masked Attention Modeling
# is off: with a self teacher, regressing its own moving attention hurt the encoder in our runs (add
# --gpa_prediction true to see it). The teacher's block and head are chosen by few-shot selection on 10 annotated
# training images (the garment's pixels are the object), repeated every 100 steps because a self teacher changes as
# it learns: the last block's last head of a trained student ranks the background above the garment.
#
#   bash scripts/pretrain.sh                       # writes outputs/gpa-fashion-mnist
#   OUTPUT_DIR=outputs/mae MAX_STEPS=600 bash scripts/pretrain.sh --mask_method random
#
# Extra arguments go to run_scripts/run_pretrain.py and win over the ones below. Running it again resumes from the
# last checkpoint in OUTPUT_DIR (add --overwrite_output_dir to start over). Loss curves: tensorboard --logdir OUTPUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# ViT with 28x28 inputs in 4x4 patches (7x7 = 49 tokens), 4 blocks of width 96; a 1-block decoder of width 64.
model="patch_size=4,hidden_size=96,num_hidden_layers=4,num_attention_heads=4,intermediate_size=384"
model+=",decoder_hidden_size=64,decoder_num_hidden_layers=1,decoder_num_attention_heads=4,decoder_intermediate_size=256"

output_dir="${OUTPUT_DIR:-outputs/gpa-fashion-mnist}"
.venv/bin/python run_scripts/run_pretrain.py \
    --dataset_name fashion_mnist \
    --output_dir "$output_dir" \
    --do_train \
    --do_eval \
    --image_size 28 \
    --num_channels 1 \
    --config_overrides "$model" \
    --per_device_train_batch_size 128 \
    --per_device_eval_batch_size 256 \
    --max_steps "${MAX_STEPS:-1200}" \
    --gpa_teacher self \
    --gpa_prediction false \
    --gpa_selection_images 10 \
    --gpa_selection_steps 100 \
    --base_learning_rate 2e-3 \
    --weight_decay 0.05 \
    --lr_scheduler_type cosine \
    --warmup_steps 0.1 \
    --max_eval_samples 1000 \
    --logging_steps 20 \
    --save_steps 400 \
    --save_total_limit 2 \
    --report_to tensorboard \
    --seed 0 \
    "$@"

# Figures: image / GPA heat map / schedule's mask, and MAE's reconstruction, for photos and Fashion-MNIST samples.
.venv/bin/python run_scripts/visualize_gpa.py --model_name_or_path "$output_dir" --output_dir "$output_dir/figures"

# Evaluation: k-NN accuracy of the frozen encoder against its random initialisation, with the training curves.
.venv/bin/python run_scripts/evaluate_pretraining.py --model_name_or_path "$output_dir" --dataset_name fashion_mnist \
    --max_train_samples 5000 --max_eval_samples 1000 --output_dir "$output_dir/evaluation"

# Do the masks find the garment? Object recall on 1,000 test images against a random mask and the most possible.
.venv/bin/python run_scripts/evaluate_masks.py --model_name_or_path "$output_dir" --dataset_name fashion_mnist \
    --num_images 1000 --output_dir "$output_dir/evaluation"

echo
echo "Checkpoint:  $output_dir"
echo "Figures:     $output_dir/figures/*.png"
echo "Evaluation:  $output_dir/evaluation/evaluation.png, $output_dir/evaluation/mask_recall.json"
echo "Explorer:    .venv/bin/python run_scripts/gpa_explorer.py --model_name_or_path $output_dir   # http://127.0.0.1:7860"
echo "Next: python run_scripts/run_linear_probe.py --model_name_or_path $output_dir --dataset_name fashion_mnist --output_dir $output_dir/linear"
