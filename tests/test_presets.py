"""Paper presets (vlprompt.presets): each resolves to the official values, named settings win,
the preset is recorded in config.json, and train / bench take it from Python and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlprompt.api import resolve_config
from vlprompt.cli import main
from vlprompt.config import config_differences
from vlprompt.data.templates import IMAGENET_TEMPLATES
from vlprompt.methods import make_config
from vlprompt.presets import (
    FEWSHOT_SHOTS,
    PRESETS,
    PresetError,
    markdown_table,
    resolve_preset,
)

pytestmark = pytest.mark.usefixtures("isolated_home")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"

# SGD with Dassl's defaults and 1 constant warm-up epoch at 1e-5: every official config
# (KaiyangZhou/Dassl.pytorch dassl/config/defaults.py; the YAMLs' OPTIM blocks)
SGD = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
WARMUP = {"warmup_epochs": 1, "warmup_lr": 1e-5}

DEPT = {  # Koorye/DePT: the recipe and the head's settings shared by its three trainers
    **SGD, **WARMUP, "lr": 0.0035, "epochs": 10, "batch_size": 4,
    "feature_rule": "dept", "dept_weight": 0.7, "dept_lr_scale": 6.5,
}  # fmt: skip
RPO_K24 = {  # mlvlab/RPO configs/trainers/RPO/main_K24.yaml
    **SGD, **WARMUP, "K": 24, "lr": 0.01, "epochs": 15, "batch_size": 4,
    "template": "a photo of a {}.",  # RPO's train.py: DATASET.PROMPT "a photo of a _."
}  # fmt: skip
PROGRAD = {  # BeierZhu/Prompt-align ProGrad.public/configs/trainers/ProGrad/rn50*.yaml
    **SGD, **WARMUP, "lr": 0.002, "batch_size": 32, "gradient_rule": "prograd",
    "prograd_temperature": 1.0, "ctx_from_template": True,
    # scripts/prograd.sh and base2new_train_prograd.sh: NCTX=16, CSC=False, CTP=end, LAMBDA=1.0
    "n_ctx": 16, "csc": False, "class_token_position": "end", "prograd_lambda": 1.0,
}  # fmt: skip
PROGRAD_16 = {**PROGRAD, "epochs": 200}  # 16 shots: rn50.yaml
COOP_FEWSHOT = {  # KaiyangZhou/CoOp configs/trainers/CoOp/rn50*.yaml, COOP.md (M=16, end)
    **SGD, **WARMUP, "lr": 0.002, "batch_size": 32,
    "n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end",
}  # fmt: skip
COOP_B2N = {  # KaiyangZhou/CoOp vit_b16_ctxv1.yaml (scripts/cocoop/base2new_train.sh)
    **SGD, **WARMUP, "lr": 0.002, "batch_size": 32, "epochs": 200,
    "n_ctx": 4, "ctx_init": "a photo of a", "csc": False, "class_token_position": "end",
}  # fmt: skip
COCOOP = {  # KaiyangZhou/CoOp configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml
    **SGD, **WARMUP, "n_ctx": 4, "ctx_init": "a photo of a", "lr": 0.002, "epochs": 10,
    "batch_size": 1,
}  # fmt: skip
KGCOOP = {  # htyao89/KgCoOp configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml + base2new_train.sh
    **SGD, **WARMUP, "lr": 0.002, "epochs": 100, "batch_size": 128,
    "n_ctx": 4, "ctx_init": "a photo of a", "csc": False, "class_token_position": "end", "w": 8.0,
}  # fmt: skip
IVLP = {  # muzairkhattak/PromptSRC configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml
    **SGD, **WARMUP, "lr": 0.0025, "epochs": 20, "batch_size": 4, "n_ctx": 4, "n_ctx_vision": 4,
    "ctx_init": "a photo of a", "depth_text": 9, "depth_vision": 9,
}  # fmt: skip
CLIP_ADAPTER = {  # CoOp's rn50 recipe (CLIP-Adapter's README) + clip_adapter.py's constants
    **SGD, **WARMUP, "lr": 0.002, "batch_size": 32, "residual_ratio": 0.2, "reduction": 4,
}  # fmt: skip
MAPLE = {  # muzairkhattak/multimodal-prompt-learning configs/trainers/MaPLe/..._2ctx.yaml
    **SGD, **WARMUP, "n_ctx": 2, "ctx_init": "a photo of a", "depth": 9, "lr": 0.0035,
    "epochs": 5, "batch_size": 4,
}  # fmt: skip
# ..._2ctx_cross_datasets.yaml (scripts/maple/xd_train_maple.sh): depth 3, LR 0.0026, 2 epochs
MAPLE_XD = {**MAPLE, "depth": 3, "lr": 0.0026, "epochs": 2}
PROMPTSRC = {  # muzairkhattak/PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx
    **SGD, **WARMUP, "n_ctx": 4, "n_ctx_vision": 4, "ctx_init": "a photo of a", "depth_text": 9,
    "depth_vision": 9, "text_loss_weight": 25.0, "image_loss_weight": 10.0, "gpa_mean": 15.0,
    "gpa_std": 1.0, "lr": 0.0025, "epochs": 20, "batch_size": 4,
}  # fmt: skip
# vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml: 50 epochs, GPA 30/30 (ImageNet, Caltech101, Pets,
# Food101, UCF101, SUN397); its commented-out 45/5 for Cars, Flowers, Aircraft, DTD, EuroSAT
PROMPTSRC_FS = {**PROMPTSRC, "epochs": 50, "gpa_mean": 30.0, "gpa_std": 30.0}
PROMPTSRC_FS_45 = {**PROMPTSRC_FS, "gpa_mean": 45.0, "gpa_std": 5.0}
# vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml: depth 3/3, GPA 6/10, still 20 epochs
# yunncheng/MMRL configs/trainers/MMRL/vit_b16*.yaml (AdamW, Dassl's weight decay) and
# trainers/config.py (REG_WEIGHT per data set, REP_DIM 2048 for EuroSAT, every task)
MMRL = {
    **WARMUP, "optimizer": "adamw", "momentum": 0.9, "weight_decay": 5e-4, "lr": 0.001,
    "n_rep_tokens": 5, "rep_dim": 512, "rep_layers": [6, 7, 8, 9, 10, 11, 12], "alpha": 0.7,
    "reg_weight": 1.0, "epochs": 10, "batch_size": 4,
}  # fmt: skip
MMRL_FS = {**MMRL, "epochs": 50, "batch_size": 32, "reg_weight": 0.5}
PROMPTSRC_XD = {**PROMPTSRC, "depth_text": 3, "depth_vision": 3, "gpa_mean": 6.0, "gpa_std": 10.0}
TCP = {  # htyao89/Textual-based_Class-aware_prompt_tuning configs/trainers/TCP/vit_b16_ep100_ctxv1
    # OPTIM adam with the README's eps 1e-3, Dassl's weight decay; base2new_train.sh NCTX=4;
    # trainers/tcp.py (4 class-aware tokens, loss weight 8.0), clip_text/model.py (layers=[8])
    **WARMUP, "optimizer": "adam", "adam_eps": 1e-3, "weight_decay": 5e-4, "lr": 0.002, "epochs": 50,
    "batch_size": 32, "n_ctx": 4, "ctx_init": "", "n_class_tokens": 4, "inject_layer": 8,
    "kg_weight": 8.0, "prompt_template": "{}.",
}  # fmt: skip

SKIP = {  # Koorye/SkipTuning train.py TRAINER.SKIP defaults, every config: SGD, batch 4
    **SGD, "batch_size": 4, "start_layer": 6, "top_ratio": 0.5, "max_top": 50, "skip_lambda": 0.3,
}  # fmt: skip
SKIP_B2N = {**SKIP, "lr": 2e-5, "image_lr": 5e-6, "warmup_epochs": 1, "warmup_lr": 1e-6,
            "epochs": 20}  # vit_b16_bs4.yaml (STAGED_LR, NEW_LR 5e-6)  # fmt: skip
SKIP_XD = {**SKIP, "lr": 1e-5, "image_lr": 1e-6, "warmup_epochs": 1, "warmup_lr": 1e-8,
           "epochs": 5}  # vit_b16_bs4_cross_datasets.yaml, ImageNet: 20 / 4  # fmt: skip
SKIP_FS = {**SKIP, "lr": 1e-5, "image_lr": 1e-5, "warmup_epochs": 0,
           "epochs": 40}  # vit_b16_bs4_few_shot.yaml (no STAGED_LR)  # fmt: skip
CLIP_LORA = {  # MaxZanella/CLIP-LoRA run_utils.py defaults, lora.py's AdamW and cosine, main.py
    "optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-2, "batch_size": 32,
    "warmup_epochs": 0, "lr_schedule": "step", "min_lr": 1e-6,  # CosineAnnealingLR per step
    "rank": 2, "alpha": 1.0, "dropout": 0.25, "encoder": "both", "position": "all",
    "params": ["q", "k", "v"],
    "template": "a photo of a {}.",  # datasets/*.py: every data set (the CoOp ones commented out)
    "logit_scale": 100.0,  # main.py
}  # fmt: skip
TWO_STAGE = {  # FarinaMatteo/rethinking_fewshot_vlms main.py defaults, fs/twostage.py, datasets/*.py
    "optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-2, "batch_size": 32,
    "warmup_epochs": 0, "lr_schedule": "step", "min_lr": 1e-6,  # a CosineAnnealingLR per stage
    "stage1_fraction": 0.6, "towers": "both",  # --n_iters_frac 0.6, --peft ln, --ln_modality both
    "template": "a photo of a {}.",  # every data set (the CoOp templates commented out)
}  # fmt: skip
TIP = {  # gaopengcuhk/Tip-Adapter configs/*.yaml (alike in all) + main.py's RandomResizedCrop
    "init_beta": 1.0, "search_hp": True, "search_step": [200, 20], "augment_epoch": 10,
    "cache_crop_min_scale": 0.5,
}  # fmt: skip
TIP_F = {  # configs/*.yaml lr, train_epoch + main.py run_tip_adapter_F (AdamW eps 1e-4, cosine)
    "lr": 0.001, "epochs": 20, "optimizer": "adamw", "adam_eps": 1e-4, "weight_decay": 0.01,
    "batch_size": 256, "warmup_epochs": 0, "lr_schedule": "step", "min_lr": 0.0,
}  # fmt: skip
# configs/<data set>.yaml (init_alpha, search_scale) and datasets/<data set>.py (template)
TIP_IMAGENET = {**TIP, "init_alpha": 1.17, "search_scale": [7.0, 3.0],
                "templates": list(IMAGENET_TEMPLATES)}  # datasets/imagenet.py: CLIP's 7  # fmt: skip
TIP_DTD = {**TIP, "init_alpha": 2.0, "search_scale": [13.0, 13.0], "template": "{} texture."}
TIP_EUROSAT = {**TIP, "init_alpha": 2.0, "search_scale": [12.0, 10.0],
               "template": "a centered satellite photo of {}."}  # fmt: skip
TIP_FGVC = {**TIP, "init_alpha": 5.0, "search_scale": [30.0, 30.0],
            "template": "a photo of a {}, a type of aircraft."}  # configs/fgvc.yaml  # fmt: skip
TIP_FLOWERS = {**TIP, "init_alpha": 10.0, "search_scale": [50.0, 50.0],
               "template": "a photo of a {}, a type of flower."}  # fmt: skip
TIP_CALTECH = {**TIP, "init_alpha": 3.0, "search_scale": [12.0, 5.0],
               "template": "a photo of a {}."}  # fmt: skip
TIP_UCF = {**TIP, "init_alpha": 3.0, "search_scale": [7.0, 3.0],
           "template": "a photo of a person doing {}."}  # fmt: skip
TIP_CARS = {**TIP, "init_alpha": 3.0, "search_scale": [20.0, 10.0], "template": "a photo of a {}."}
TIP_FOOD = {**TIP, "init_alpha": 1.17, "search_scale": [10.0, 10.0],
            "template": "a photo of {}, a type of food."}  # fmt: skip
TIP_SUN = {**TIP, "init_alpha": 1.17, "search_scale": [12.0, 10.0], "template": "a photo of a {}."}
TIP_PETS = {**TIP, "init_alpha": 1.17, "search_scale": [7.0, 3.0],
            "template": "a photo of a {}, a type of pet."}  # fmt: skip
GDA_B2N = {"covariance": "class_mean", "new_class_topk": 64, "new_class_text_copies": 16}
GDA = {  # mrflogs/ICLR24 configs/few_shots/*.yaml (augment_epoch) + main_few_shots.py run
    "augment_epoch": 10, "cache_crop_min_scale": 0.5, "alpha": 0.1,
    "alpha_grid": [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
}  # fmt: skip
LPP = {"epochs": 300, "momentum": 0.9, "alpha_every": 10, "cache_crop_min_scale": 0.5}
CLAP = {  # jusiro/CLAP SGD_lr1e-1_B256_ep300.yaml + Dassl defaults + experiment_CLAP.txt
    "optimizer": "sgd", "lr": 0.1, "batch_size": 256, "epochs": 300, "warmup_epochs": 1,
    "warmup_lr": 1e-5, "weight_decay": 0.0, "lr_schedule": "epoch", "momentum": 0.9,
    "cache_crop_min_scale": 0.08, "constraint": "l2", "augment_epoch": 20,
}  # fmt: skip
SEVEN = {"templates": list(IMAGENET_TEMPLATES)}  # datasets/imagenet.py of GDA and LP++

CASES = [
    # (preset, method, data set, shots, expected settings)
    ("rpo_base2new", "rpo", "dtd", 16, RPO_K24),
    ("rpo_base2new", "rpo", "imagenet", 16, RPO_K24),
    # mlvlab/RPO configs/trainers/RPO/imagenet_k24_ep15.yaml: lr 0.005
    ("rpo_dg", "rpo", "imagenet", 16, {**RPO_K24, "lr": 0.005}),
    # mlvlab/RPO configs/trainers/RPO/main_K4.yaml (efs_base2new_generalization_main.sh)
    ("rpo_efs", "rpo", "eurosat", 1, {**RPO_K24, "K": 4}),
    ("rpo_efs", "rpo", "caltech101", 8, {**RPO_K24, "K": 4}),
    # ProGrad.public/README.md: 1 shot rn50_ep50, 2/4 shots rn50_ep100, 8/16 shots rn50 (200);
    # lambda 0.8 for 8/16-shot Flowers102, DTD, EuroSAT
    ("prograd_fewshot", "prograd", "caltech101", 1, {**PROGRAD, "epochs": 50}),
    ("prograd_fewshot", "prograd", "oxford_flowers", 2, {**PROGRAD, "epochs": 100}),
    ("prograd_fewshot", "prograd", "dtd", 4, {**PROGRAD, "epochs": 100}),
    ("prograd_fewshot", "prograd", "dtd", 8, {**PROGRAD, "epochs": 200, "prograd_lambda": 0.8}),
    ("prograd_fewshot", "prograd", "eurosat", 16, {**PROGRAD_16, "prograd_lambda": 0.8}),
    ("prograd_fewshot", "prograd", "oxford_flowers", 16, {**PROGRAD_16, "prograd_lambda": 0.8}),
    ("prograd_fewshot", "prograd", "oxford_pets", 16, PROGRAD_16),
    # ImageNet: not in ProGrad's files; CoOp's COOP.md rule (*_ep50 for all settings)
    ("prograd_fewshot", "prograd", "imagenet", 16, {**PROGRAD, "epochs": 50}),
    # ProGrad.public/scripts/base2new_train_prograd.sh: rn50_ep100, 4 shots; README: ImageNet 50
    ("prograd_base2new", "prograd", "stanford_cars", 4, {**PROGRAD, "epochs": 100}),
    ("prograd_base2new", "prograd", "imagenet", 4, {**PROGRAD, "epochs": 50}),
    # KaiyangZhou/CoOp COOP.md: 1 shot rn50_ep50, 2/4 rn50_ep100, 8/16 rn50; ImageNet *_ep50
    ("coop_fewshot", "coop", "caltech101", 1, {**COOP_FEWSHOT, "epochs": 50}),
    ("coop_fewshot", "coop", "caltech101", 2, {**COOP_FEWSHOT, "epochs": 100}),
    ("coop_fewshot", "coop", "sun397", 4, {**COOP_FEWSHOT, "epochs": 100}),
    ("coop_fewshot", "coop", "dtd", 8, {**COOP_FEWSHOT, "epochs": 200}),
    ("coop_fewshot", "coop", "dtd", 16, {**COOP_FEWSHOT, "epochs": 200}),
    ("coop_fewshot", "coop", "imagenet", 16, {**COOP_FEWSHOT, "epochs": 50}),
    ("coop_fewshot", "coop", "imagenet", 2, {**COOP_FEWSHOT, "epochs": 50}),
    # CoOp's ImageNet config in scripts/cocoop/base2new_train.sh: vit_b16_ep50_ctxv1
    ("coop_base2new", "coop", "ucf101", 16, COOP_B2N),
    ("coop_base2new", "coop", "imagenet", 16, {**COOP_B2N, "epochs": 50}),
    ("cocoop", "cocoop", "imagenet", 16, COCOOP),
    ("cocoop", "cocoop", "fgvc_aircraft", 4, COCOOP),
    ("kgcoop", "kgcoop", "food101", 16, KGCOOP),
    ("kgcoop", "kgcoop", "imagenet", 4, KGCOOP),
    # KgCoOp/trainers/kgcoop.py CUSTOM_TEMPLATES["DescribableTextures"]
    ("kgcoop", "kgcoop", "dtd", 16, {**KGCOOP, "template": "a photo of a {}, a type of texture."}),
    ("ivlp_base2new", "ivlp", "imagenet", 16, IVLP),
    ("clip_adapter_fewshot", "clip_adapter", "dtd", 1, {**CLIP_ADAPTER, "epochs": 50}),
    ("clip_adapter_fewshot", "clip_adapter", "dtd", 16, {**CLIP_ADAPTER, "epochs": 200}),
    ("clip_adapter_fewshot", "clip_adapter", "imagenet", 16, {**CLIP_ADAPTER, "epochs": 50}),
    ("maple_base2new", "maple", "imagenet", 16, MAPLE),
    ("maple_base2new", "maple", "eurosat", 16, MAPLE),
    ("maple_xd", "maple", "imagenet", 16, MAPLE_XD),
    ("promptsrc_base2new", "promptsrc", "oxford_flowers", 16, PROMPTSRC),
    ("promptsrc_base2new", "promptsrc", "imagenet", 16, PROMPTSRC),
    ("promptsrc_fewshot", "promptsrc", "imagenet", 1, PROMPTSRC_FS),
    ("promptsrc_fewshot", "promptsrc", "sun397", 8, PROMPTSRC_FS),
    ("promptsrc_fewshot", "promptsrc", "ucf101", 16, PROMPTSRC_FS),
    ("promptsrc_fewshot", "promptsrc", "dtd", 2, PROMPTSRC_FS_45),
    ("promptsrc_fewshot", "promptsrc", "stanford_cars", 16, PROMPTSRC_FS_45),
    ("promptsrc_fewshot", "promptsrc", "eurosat", 4, PROMPTSRC_FS_45),
    ("promptsrc_xd", "promptsrc", "imagenet", 16, PROMPTSRC_XD),
    ("mmrl_base2new", "mmrl", "stanford_cars", 16, {**MMRL, "reg_weight": 7.0}),
    ("mmrl_base2new", "mmrl", "oxford_pets", 16, {**MMRL, "reg_weight": 0.2}),
    ("mmrl_base2new", "mmrl", "eurosat", 16, {**MMRL, "reg_weight": 0.01, "rep_dim": 2048}),
    (
        "mmrl_base2new",
        "mmrl",
        "imagenet",
        16,
        {**MMRL, "reg_weight": 0.5, "epochs": 5, "batch_size": 32},
    ),
    ("mmrl_base2new", "mmrl", "mini_colors", 16, MMRL),  # a data set config.py does not name
    ("mmrl_fewshot", "mmrl", "dtd", 1, {**MMRL_FS, "reg_weight": 6.0}),
    ("mmrl_fewshot", "mmrl", "imagenet", 16, {**MMRL_FS, "reg_weight": 0.5, "epochs": 5}),
    ("mmrl_fewshot", "mmrl", "mini_colors", 4, MMRL_FS),
    # vit_b16_cross_datasets.yaml; cross_datasets_train.sh's REG_WEIGHT 0.2 wins over config.py
    (
        "mmrl_xd",
        "mmrl",
        "imagenet",
        16,
        {**MMRL, "reg_weight": 0.2, "epochs": 1, "batch_size": 32, "warmup_epochs": 0},
    ),
    ("tcp", "tcp", "caltech101", 16, TCP),
    ("tcp", "tcp", "eurosat", 16, TCP),
    # TCP's train.py: MAX_EPOCH 25 for ImageNet and SUN397
    ("tcp", "tcp", "imagenet", 16, {**TCP, "epochs": 25}),
    ("tcp", "tcp", "sun397", 16, {**TCP, "epochs": 25}),
    # TCP's trainers/tcp.py CUSTOM_TEMPLATES, less the 4 words the context replaces
    ("tcp", "tcp", "oxford_pets", 16, {**TCP, "prompt_template": "{}, a type of pet."}),
    ("tcp", "tcp", "dtd", 16, {**TCP, "prompt_template": "{} texture."}),
    ("tcp", "tcp", "stanford_cars", 16, {**TCP, "prompt_template": "{}, a type of car"}),
    ("tcp", "tcp", "ucf101", 16, {**TCP, "prompt_template": "person doing {}."}),
    # MaxZanella/CLIP-LoRA lora.py: total_iters = n_iters (500, run_utils.py) * shots
    ("clip_lora_fewshot", "clip_lora", "dtd", 1, {**CLIP_LORA, "iterations": 500}),
    ("clip_lora_fewshot", "clip_lora", "eurosat", 2, {**CLIP_LORA, "iterations": 1000}),
    ("clip_lora_fewshot", "clip_lora", "imagenet", 4, {**CLIP_LORA, "iterations": 2000}),
    ("clip_lora_fewshot", "clip_lora", "oxford_flowers", 8, {**CLIP_LORA, "iterations": 4000}),
    ("clip_lora_fewshot", "clip_lora", "imagenet", 16, {**CLIP_LORA, "iterations": 8000}),
    # FarinaMatteo/rethinking_fewshot_vlms fs/twostage.py: total_iters = n_iters (300) * shots
    ("two_stage_fewshot", "two_stage", "dtd", 1, {**TWO_STAGE, "iterations": 300}),
    ("two_stage_fewshot", "two_stage", "imagenet", 16, {**TWO_STAGE, "iterations": 4800}),
    ("two_stage_base2new", "two_stage", "eurosat", 4, {**TWO_STAGE, "iterations": 1200}),
    ("two_stage_base2new", "two_stage", "imagenet", 16, {**TWO_STAGE, "iterations": 4800}),
    # Koorye/SkipTuning trainers/skip_tuning.py: MAX_EPOCH / 4 for ImageNet, SUN397, Food101
    ("skiptuning_base2new", "skiptuning", "dtd", 16, SKIP_B2N),
    ("skiptuning_base2new", "skiptuning", "sun397", 16, {**SKIP_B2N, "epochs": 5}),
    ("skiptuning_xd", "skiptuning", "imagenet", 16, SKIP_XD),
    ("skiptuning_fewshot", "skiptuning", "eurosat", 1, SKIP_FS),
    ("skiptuning_fewshot", "skiptuning", "food101", 16, {**SKIP_FS, "epochs": 10}),
    # gaopengcuhk/Tip-Adapter: one config per data set for every shots (README); fgvc.yaml is
    # vlprompt's fgvc_aircraft; a data set without a config keeps the defaults (imagenet.yaml)
    ("tip_adapter", "tip_adapter", "imagenet", 16, TIP_IMAGENET),
    ("tip_adapter", "tip_adapter", "fgvc_aircraft", 1, TIP_FGVC),
    ("tip_adapter", "tip_adapter", "caltech101", 2, TIP_CALTECH),
    ("tip_adapter", "tip_adapter", "dtd", 4, TIP_DTD),
    ("tip_adapter", "tip_adapter", "oxford_flowers", 8, TIP_FLOWERS),
    ("tip_adapter", "tip_adapter", "food101", 16, TIP_FOOD),
    ("tip_adapter", "tip_adapter", "sun397", 16, TIP_SUN),
    ("tip_adapter", "tip_adapter", "oxford_pets", 16, TIP_PETS),
    ("tip_adapter", "tip_adapter", "mini_colors", 16, TIP),
    # configs/eurosat.yaml: train_epoch 100; every other config 20
    ("tip_adapter_f", "tip_adapter_f", "eurosat", 16, {**TIP_EUROSAT, **TIP_F, "epochs": 100}),
    ("tip_adapter_f", "tip_adapter_f", "eurosat", 1, {**TIP_EUROSAT, **TIP_F, "epochs": 100}),
    ("tip_adapter_f", "tip_adapter_f", "imagenet", 16, {**TIP_IMAGENET, **TIP_F}),
    ("tip_adapter_f", "tip_adapter_f", "dtd", 1, {**TIP_DTD, **TIP_F}),
    ("tip_adapter_f", "tip_adapter_f", "ucf101", 8, {**TIP_UCF, **TIP_F}),
    ("tip_adapter_f", "tip_adapter_f", "stanford_cars", 4, {**TIP_CARS, **TIP_F}),
    # GDA, LP++, CLAP: datasets/<name>.py templates (Tip-Adapter's table), any shots
    ("gda_fewshot", "gda", "imagenet", 16, {**GDA, **SEVEN}),
    (
        "gda_fewshot",
        "gda",
        "fgvc_aircraft",
        1,
        {**GDA, "template": "a photo of a {}, a type of aircraft."},
    ),
    ("gda_fewshot", "gda", "mini_colors", 4, GDA),
    ("gda_dg", "gda", "imagenet", 16, {**GDA, **SEVEN}),
    # main_base2new.py: the base classes' class_mean covariance, new classes' k 64 and 16 copies
    ("gda_base2new", "gda", "imagenet", 16, {**GDA, **SEVEN, **GDA_B2N}),
    ("gda_base2new", "gda", "dtd", 16, {**GDA, "template": "{} texture.", **GDA_B2N}),
    ("lp_plus_plus_fewshot", "lp_plus_plus", "imagenet", 16, {**LPP, **SEVEN}),
    ("lp_plus_plus_fewshot", "lp_plus_plus", "dtd", 2, {**LPP, "template": "{} texture."}),
    (
        "lp_plus_plus_fewshot",
        "lp_plus_plus",
        "ucf101",
        8,
        {**LPP, "template": "a photo of a person doing {}."},
    ),
    # DePT (Koorye/DePT configs/trainers/ExtrasLinearProbe*/ + train.py extend_cfg)
    (
        "coop_dept_base2new",
        "coop",
        "oxford_pets",
        16,
        {**DEPT, "n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end"},
    ),
    (
        "cocoop_dept_base2new",
        "cocoop",
        "oxford_pets",
        16,
        {**DEPT, "lr": 0.002, "batch_size": 1, "n_ctx": 4, "ctx_init": "a photo of a"},
    ),
    (
        "kgcoop_dept_base2new",
        "kgcoop",
        "oxford_pets",
        16,
        {
            **DEPT,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "csc": False,
            "class_token_position": "end",
            "w": 2.0,
        },
    ),
    (
        "kgcoop_dept_base2new",
        "kgcoop",
        "dtd",
        16,
        {
            **DEPT,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "csc": False,
            "class_token_position": "end",
            "w": 2.0,
            "template": "a photo of a {}, a type of texture.",
        },
    ),
    (
        "maple_dept_base2new",
        "maple",
        "imagenet",
        16,
        {**DEPT, "n_ctx": 2, "ctx_init": "a photo of a", "depth": 9},
    ),
    # DePT's cross-data-set runs (parallel_runner.py mode 'xd'): the same configs on ImageNet
    (
        "coop_dept_xd",
        "coop",
        "imagenet",
        16,
        {**DEPT, "n_ctx": 16, "ctx_init": "", "csc": False, "class_token_position": "end"},
    ),
    (
        "kgcoop_dept_xd",
        "kgcoop",
        "imagenet",
        16,
        {
            **DEPT,
            "n_ctx": 4,
            "ctx_init": "a photo of a",
            "csc": False,
            "class_token_position": "end",
            "w": 2.0,
        },
    ),
    (
        "maple_dept_xd",
        "maple",
        "imagenet",
        16,
        {**DEPT, "n_ctx": 2, "ctx_init": "a photo of a", "depth": 9},
    ),
    # CLAP's ImageNet: IMAGENET_TEMPLATES_SELECT + CUSTOM_TEMPLATES["ImageNet"]
    (
        "clap_fewshot",
        "clap",
        "imagenet",
        16,
        {**CLAP, "templates": [*IMAGENET_TEMPLATES, "a photo of a {}."]},
    ),
    (
        "clap_fewshot",
        "clap",
        "eurosat",
        1,
        {**CLAP, "template": "a centered satellite photo of {}."},
    ),
]


@pytest.mark.parametrize(("name", "method", "dataset", "shots", "expected"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES])  # fmt: skip
def test_each_preset_resolves_to_the_official_values(name, method, dataset, shots, expected):
    assert resolve_preset(name, method, dataset, shots) == expected
    config = resolve_config(method, dataset, shots=shots, preset=name)
    assert {k: config.method_config[k] for k in expected} == expected
    assert config.preset == name


def test_every_preset_is_checked_above_and_names_only_its_methods_settings():
    assert {c[0] for c in CASES} == set(PRESETS)
    for preset in PRESETS.values():
        for dataset in ("imagenet", "dtd", "oxford_flowers", "eurosat", "mini_colors"):
            for shots in preset.shots or FEWSHOT_SHOTS:
                make_config(preset.method, **preset.resolve(dataset, shots))  # valid values
        assert all(rule.source for rule in preset.rules)  # every value names its file


def test_mmrl_flags_its_per_data_set_constants():
    """REG_WEIGHT per data set and EuroSAT's REP_DIM (trainers/config.py, no stated validation
    protocol) are flagged in `vlprompt presets -v`; the YAMLs' values are not."""
    from vlprompt.presets import describe_presets

    lines = [line for line in describe_presets(verbose=True) if "yunncheng/MMRL" in line]
    flagged = [line for line in lines if "per-data-set constant" in line]
    assert any("[eurosat] rep_dim=2048" in line for line in flagged)
    assert any("[stanford_cars] reg_weight=7.0" in line for line in flagged)
    assert len(flagged) == 2 * (8 + 1)  # base2new and few-shot: 8 distinct weights + rep_dim
    assert not any("vit_b16" in line for line in flagged)


def test_tcp_keeps_its_own_hand_crafted_prompts():
    """The meta-net's input prompt (TCP's trainers/tcp.py CUSTOM_TEMPLATES_ori) is the tcp
    method's per-data-set `template`, which the preset leaves alone."""
    official = {
        "oxford_pets": "a photo of a {}, a type of pet.",
        "fgvc_aircraft": "a photo of an aircraft {}.",
        "dtd": "a photo of a {}, a type of texture.",
        "eurosat": "a centered satellite photo of {}.",
        "food101": "a photo of a {}, a type of food.",
        "ucf101": "a photo of a person doing {}.",
        "imagenet": "a photo of a {}.",
    }
    for dataset, template in official.items():
        config = resolve_config("tcp", dataset, shots=16, preset="tcp")
        assert config.method_config["template"] == template, dataset


def test_a_named_setting_wins_over_the_preset():
    config = resolve_config(
        "prograd", "dtd", shots=16, preset="prograd_fewshot",
        overrides={"epochs": 3, "prograd_lambda": 0.5},
    )  # fmt: skip
    assert config.method_config["epochs"] == 3 and config.method_config["prograd_lambda"] == 0.5
    assert config.method_config["n_ctx"] == 16  # the rest still from the preset
    config = resolve_config("kgcoop", "dtd", preset="kgcoop", overrides={"template": "{}."})
    assert config.method_config["template"] == "{}."
    # without a preset: the method's own defaults, and no name recorded
    plain = resolve_config("prograd", "dtd", shots=16)
    assert plain.method_config["prograd_lambda"] == 1.0 and plain.preset is None


def test_a_preset_equal_to_the_defaults_is_the_same_run():
    """The name is provenance: the resolved values identify a run (rpo_base2new equals RPO's
    defaults), so a run trained with the preset is found again without it, and vice versa."""
    with_preset = resolve_config("rpo", "dtd", preset="rpo_base2new")
    assert config_differences(resolve_config("rpo", "dtd"), with_preset) == []
    diffs = config_differences(with_preset, resolve_config("rpo", "dtd", preset="rpo_dg"))
    assert diffs == ["method_config.lr: 0.01 -> 0.005"]


def test_clip_lora_preset_at_16_shots_is_the_methods_defaults():
    """CLIP-LoRA's defaults are its official 16-shot values: the preset changes nothing there,
    and at other shots only the iterations (500 x shots)."""
    default = resolve_config("clip_lora", "dtd", shots=16)
    assert config_differences(default, resolve_config(
        "clip_lora", "dtd", shots=16, preset="clip_lora_fewshot")) == []  # fmt: skip
    four = resolve_config("clip_lora", "dtd", shots=4, preset="clip_lora_fewshot")
    assert config_differences(resolve_config("clip_lora", "dtd", shots=4), four) == [
        "method_config.iterations: 8000 -> 2000"
    ]


def test_two_stage_presets_at_16_shots_are_the_methods_defaults():
    """2SFS's defaults are its official 16-shot values, the same for every data set and both
    settings: at other shots the presets change only the iterations (300 x shots)."""
    for preset in ("two_stage_fewshot", "two_stage_base2new"):
        for dataset in ("dtd", "imagenet"):
            default = resolve_config("two_stage", dataset, shots=16)
            assert config_differences(default, resolve_config(
                "two_stage", dataset, shots=16, preset=preset)) == []  # fmt: skip
        two = resolve_config("two_stage", "dtd", shots=2, preset=preset)
        assert config_differences(resolve_config("two_stage", "dtd", shots=2), two) == [
            "method_config.iterations: 4800 -> 600"
        ]


def test_tip_adapter_presets_hold_at_any_shots():
    """Tip-Adapter's configs are the same for 1 to 16 shots (its README), so any shots resolve."""
    for name in ("tip_adapter", "tip_adapter_f"):
        config = resolve_config(name, "dtd", shots=3, preset=name)
        assert config.method_config["init_alpha"] == 2.0
        assert config.method_config["search_scale"] == [13.0, 13.0]


@pytest.mark.parametrize(
    ("name", "method", "shots", "needles"),
    [
        ("rpo_k24", "rpo", 16, ["unknown preset 'rpo_k24'", "Did you mean", "rpo_base2new"]),
        ("rpo_dg", "coop", 16, ["'rpo_dg' is for method 'rpo', not 'coop'", "coop_fewshot"]),
        ("cocoop", "zsclip", 16, ["for method 'cocoop', not 'zsclip'", "it has no presets"]),
        ("coop_fewshot", "coop", 3, ["1, 2, 4, 8, 16 shots only, not 3"]),
        ("prograd_base2new", "prograd", 16, ["4 shots only, not 16"]),
        ("promptsrc_xd", "promptsrc", 4, ["16 shots only, not 4"]),
        ("clip_lora_fewshot", "clip_lora", 3, ["1, 2, 4, 8, 16 shots only, not 3"]),
        ("tip_adapter", "tip_adapter_f", 16, ["for method 'tip_adapter', not 'tip_adapter_f'"]),
    ],
)
def test_bad_presets_are_one_clear_error(name, method, shots, needles):
    with pytest.raises(PresetError) as info:
        resolve_config(method, "dtd", shots=shots, preset=name)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message


# ---- runs on the mini world ----------------------------------------------------------------------
def test_train_records_the_preset_and_resumes_with_it(tmp_path):
    import vlprompt

    run_dir, root = tmp_path / "run", tmp_path / "mini"
    kwargs = dict(root=root, shots=1, preset="coop_fewshot", epochs=1, evaluate=False)
    vlprompt.train("coop", "mini_colors", output_dir=run_dir, progress=False, **kwargs)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["preset"] == "coop_fewshot"
    method_config = saved["method_config"]
    assert method_config["epochs"] == 1  # named: wins over the preset's 50 for 1 shot
    assert {k: method_config[k] for k in COOP_FEWSHOT} == COOP_FEWSHOT
    # the same call again: the finished run of the same config, not "another config"
    again = vlprompt.train("coop", "mini_colors", output_dir=run_dir, progress=False, **kwargs)
    assert again.config.preset == "coop_fewshot"
    resumed = vlprompt.train("coop", "mini_colors", output_dir=run_dir, resume=True, **kwargs)
    assert resumed.config.method_config == method_config
    # the run's own config.json as a --config file: its `preset` is a run setting
    assert main(["train", "--config", str(run_dir / "config.json"), "-q", "--no-eval",
                 "-o", str(run_dir)]) == 0  # fmt: skip


def test_cli_train_takes_a_preset_and_flags_win(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--method", "rpo", "--dataset", "mini_colors", "--root", str(tmp_path / "mini"),
            "--shots", "1", "--preset", "rpo_efs", "--epochs", "1", "--set", "batch_size=2",
            "-q", "--no-eval", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["preset"] == "rpo_efs"
    assert saved["method_config"]["K"] == 4  # main_K4.yaml
    assert (saved["method_config"]["epochs"], saved["method_config"]["batch_size"]) == (1, 2)


def test_cli_bench_takes_a_preset_per_run(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "base2new", "--methods", "coop", "--datasets", "mini_colors",
            "--root", str(tmp_path / "mini"), "--seeds", "1", "--shots", "1",
            "--preset", "coop_base2new", "--set", "epochs=1", "--no-report", "-q", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "1 run(s) trained" in capsys.readouterr().out
    saved = json.loads((out / "base2new/mini_colors/coop/shots1_seed1/config.json").read_text())
    assert saved["preset"] == "coop_base2new"
    method_config = saved["method_config"]
    assert (method_config["ctx_init"], method_config["n_ctx"], method_config["epochs"]) == (
        "a photo of a", 4, 1,
    )  # fmt: skip
    assert main(argv) == 0  # the same sweep again: its run is the same config, nothing runs
    assert "0 run(s) trained or evaluated, 1 already done" in capsys.readouterr().out


class _Recorder:
    """A bench backend that records each run's train keywords (no training)."""

    def __init__(self):
        self.calls: list[dict] = []

    def backend(self):
        from vlprompt.protocols import Backend

        return Backend(train=self.train, evaluate=self.evaluate, load_run=lambda d, **k: None,
                       is_finished=lambda d: False)  # fmt: skip

    def train(self, method, dataset, **kwargs):
        self.calls.append({"method": method, "dataset": dataset, **kwargs})
        return {"method": method}

    def evaluate(self, run, dataset=None, subsample="all", split="test"):
        return {"accuracy": 50.0}


def test_bench_gives_each_method_its_own_preset(tmp_path):
    from vlprompt.protocols import run_bench

    engine = _Recorder()
    run_bench(
        "fewshot", ["prograd", "rpo", "zsclip"], ["dtd", "imagenet"], seeds=1, shots=[4, 16],
        output_dir=tmp_path / "b", preset=["prograd_fewshot", "rpo_efs"], report=False,
        backend=engine.backend(), method_overrides={"rpo": {"epochs": 2}},
    )  # fmt: skip
    got = {(c["method"], c["dataset"], c["shots"]): c.get("preset") for c in engine.calls}
    assert got[("prograd", "dtd", 16)] == "prograd_fewshot"
    assert got[("rpo", "imagenet", 4)] == "rpo_efs"
    assert got[("zsclip", "dtd", 4)] is None  # a method without a preset named: its defaults
    rpo = [c for c in engine.calls if c["method"] == "rpo"]
    assert all(c["epochs"] == 2 for c in rpo)  # method overrides still reach the run


def test_bench_refuses_bad_presets_before_any_run(tmp_path, capsys):
    from vlprompt.protocols import run_bench

    engine = _Recorder()
    for preset, needle in [
        ("rpo_dg", "'rpo_dg' is for method 'rpo', which this sweep does not run"),
        (["coop_fewshot", "coop_base2new"], "both for method 'coop'"),
        ("coop_fewshot", "1, 2, 4, 8, 16 shots only, not 3"),
    ]:
        with pytest.raises(PresetError, match=needle):
            run_bench("fewshot", ["coop"], ["dtd"], seeds=1, shots=[3], preset=preset,
                      output_dir=tmp_path / "b", backend=engine.backend(), report=False)  # fmt: skip
    assert engine.calls == []
    argv = ["bench", "base2new", "--methods", "coop", "--datasets", "dtd",
            "--preset", "rpo_base2new", "-o", str(tmp_path / "c")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlprompt: error: preset 'rpo_base2new'"), err


def test_cli_train_with_an_unknown_preset_is_one_line(tmp_path, capsys):
    argv = ["train", "--method", "coop", "--dataset", "dtd", "--preset", "coop",
            "-o", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown preset 'coop'" in err[0] and "coop_fewshot" in err[0], err
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_presets_verb_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    every = {"mini": "all", "paper": "all"}  # the presets for every method
    assert [line.split()[:2] for line in lines] == [
        [n, every[n] if n in every else PRESETS[n].method] for n in sorted([*PRESETS, *every])
    ]
    assert main(["presets", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "mlvlab/RPO configs/trainers/RPO/imagenet_k24_ep15.yaml" in out
    assert "[dtd, eurosat, oxford_flowers; 8, 16 shots] prograd_lambda=0.8" in out


def test_the_docs_table_is_the_presets_own():
    """docs/reproduce.md holds `markdown_table()` as is, so the docs cannot drift from the code."""
    assert markdown_table() in DOCS.read_text(encoding="utf-8")


# ---- the presets for every method: mini (the default with the tiny CLIP) and paper -------------
def test_every_mini_setting_is_in_config_json_under_its_owner(tmp_path):
    """Each value of the mini preset lands where it belongs in config.json: the per-method ones
    in method_config (a setting such as Tip-Adapter's `cache_crop_min_scale` must not bind to
    the engine's crop), the crop in engine, for every method in MINI_SETTINGS."""
    from vlprompt.config import ENGINE_KEYS
    from vlprompt.mini.settings import MINI_CROP_MIN_SCALE, MINI_SETTINGS

    assert MINI_CROP_MIN_SCALE == 1.0
    for method, values in MINI_SETTINGS.items():
        saved = resolve_config(method, "mini_shapes", subsample="base").to_dict()  # config.json
        assert saved["preset"] == "mini", method  # the default with the tiny CLIP
        assert saved["engine"]["crop_min_scale"] == MINI_CROP_MIN_SCALE, method
        for key, value in values.items():
            assert key not in ENGINE_KEYS, (method, key)
            assert saved["method_config"][key] == value, (method, key)
        paper = resolve_config(method, "mini_shapes", subsample="base", preset="paper").to_dict()
        assert paper["engine"]["crop_min_scale"] == 0.08, method  # the papers' crop
        own = resolve_config(method, "mini_shapes", subsample="base", backbone="RN50")
        assert own.preset is None and paper["method_config"] == own.method_config, method
    # one real run: config.json as written by train
    run_dir = tmp_path / "run"
    import vlprompt

    vlprompt.train("tip_adapter", "mini_colors", root=tmp_path / "mini", shots=1,
                   output_dir=run_dir, evaluate=False, calibrate=False, progress=False)  # fmt: skip
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["preset"] == "mini" and saved["engine"]["crop_min_scale"] == 1.0
    assert saved["method_config"]["cache_crop_min_scale"] == 1.0


def test_a_named_crop_wins_over_the_mini_preset_and_paper_gives_the_papers():
    from vlprompt.config import EngineSettings

    def crop(**kwargs):
        return resolve_config("coop", "mini_shapes", **kwargs).engine.crop_min_scale

    assert crop() == 1.0
    assert crop(engine=EngineSettings(crop_min_scale=0.08)) == 0.08  # named: the papers' value
    assert crop(engine=EngineSettings(crop_min_scale=0.5), preset="mini") == 0.5
    assert crop(preset="paper") == 0.08
    assert crop(preset="coop_fewshot") == 0.08  # a paper preset sets method settings only
    assert type(crop()) is float and type(crop(preset="paper")) is float  # config.json: a number
    # another backbone: no default preset
    other = resolve_config("coop", "mini_shapes", backbone="RN50")
    assert other.preset is None and other.engine.crop_min_scale == 0.08
    # named settings win over the mini preset's
    named = resolve_config("coop", "mini_shapes", overrides={"epochs": 3})
    assert (named.method_config["epochs"], named.method_config["batch_size"]) == (3, 32)


def test_python_train_tells_a_named_crop_from_the_default(monkeypatch, tmp_path):
    import vlprompt
    from vlprompt import api

    seen = []
    monkeypatch.setattr(api, "train_config", lambda wanted, **kw: seen.append(wanted))
    vlprompt.train("coop", "mini_shapes", output_dir=tmp_path / "a")
    vlprompt.train("coop", "mini_shapes", output_dir=tmp_path / "b", crop_min_scale=0.08)
    vlprompt.train("coop", "mini_shapes", output_dir=tmp_path / "c", preset="paper")
    assert [c.engine.crop_min_scale for c in seen] == [1.0, 0.08, 0.08]
    assert [c.method_config["epochs"] for c in seen] == [40, 40, 200]


def test_bench_takes_mini_and_paper_for_every_method(tmp_path, capsys):
    from vlprompt.protocols import run_bench

    for preset in ("mini", "paper"):
        engine = _Recorder()
        run_bench("fewshot", ["coop", "rpo"], ["mini_shapes"], seeds=1, shots=[2], preset=preset,
                  output_dir=tmp_path / preset, backend=engine.backend(), report=False)  # fmt: skip
        assert {c["method"]: c["preset"] for c in engine.calls} == {"coop": preset, "rpo": preset}
    assert main(["presets", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "    [engine, every method] crop_min_scale=1.0\n" in out
    assert "    [rpo] epochs=10, batch_size=4\n" in out
    with pytest.raises(PresetError, match="'mini' applies to every method; name it alone"):
        run_bench("fewshot", ["rpo"], ["dtd"], seeds=1, shots=[16], preset=["mini", "rpo_dg"],
                  output_dir=tmp_path / "x", backend=_Recorder().backend(), report=False)  # fmt: skip


def test_the_mini_default_is_said_first(tmp_path, capsys, caplog):
    """A run on the mini world without a preset says first that it gets the mini settings and
    how to get the papers' recipes; with --preset paper it does not."""
    run = tmp_path / "run"
    argv = ["train", "--method", "coop", "--dataset", "mini_colors", "--root", str(tmp_path / "m"),
            "--shots", "1", "--epochs", "1", "--no-eval", "--no-calibrate", "-o", str(run)]  # fmt: skip
    assert main(argv) == 0
    first = (run / "log.txt").read_text().splitlines()[0]
    assert "preset mini (the default with the tiny CLIP)" in first, first
    assert "crop_min_scale=1.0" in first and "--preset paper" in first, first
    assert main([*argv[:-1], str(tmp_path / "paper"), "--preset", "paper"]) == 0
    assert "preset mini" not in (tmp_path / "paper" / "log.txt").read_text()
    saved = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert saved["preset"] == "paper" and saved["engine"]["crop_min_scale"] == 0.08
