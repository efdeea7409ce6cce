"""Published recipes: each config equals, key by key, the values its docstring's source gives.

One table per recipe below holds each cited value once, with where the source gives it; the
config file sets each value once; the test compares the two. Every key a recipe file sets is
either cited or listed in ADAPTED with the reason it departs from the source."""

import os

import pytest

from jaxssl import config as config_lib
from jaxssl.data.root import resolve_data_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR10_TRAIN = 50_000  # training images of CIFAR-10: epochs -> steps


def simclr_cifar10_resnet18() -> dict:
    """google-research/simclr, TF2 code: {key: (value, where)}."""
    batch, epochs = 512, 1000
    readme = "tf2/README.md CIFAR-10 command"
    return {
        "method": ("simclr", "tf2/run.py --train_mode=pretrain (SimCLR)"),
        "model.name": ("resnet18", f"{readme}: --resnet_depth=18"),
        "model.cifar_stem": (True, "tf2/model.py: cifar_stem=FLAGS.image_size <= 32"),
        "model.width": (64, "tf2/run.py: width_multiplier=1"),
        "data.batch_size": (batch, f"{readme}: --train_batch_size=512"),
        "data.image_size": (32, f"{readme}: --image_size=32"),
        "total_steps": (epochs * CIFAR10_TRAIN // batch, f"{readme}: --train_epochs=1000"),
        "compute_dtype": ("float32", f"{readme}: --use_tpu=False (float32 on CPU/GPU)"),
        "optim.name": ("lars", "tf2/run.py: optimizer='lars'"),
        "optim.base_lr": (1.0, f"{readme}: --learning_rate=1.0"),
        "optim.lr_scaling": ("linear", "tf2/run.py: learning_rate_scaling='linear' (lr * batch / 256)"),
        "optim.schedule": ("cosine", "tf2/model.py: WarmUpAndCosineDecay"),
        "optim.warmup_steps": (10 * CIFAR10_TRAIN // batch,
                               "tf2/run.py: warmup_epochs=10; tf2/model.py: warmup_epochs * N // batch"),
        "optim.end_lr_ratio": (0.0, "tf2/model.py: CosineDecay to 0"),
        "optim.weight_decay": (1e-4, f"{readme}: --weight_decay=1e-4"),
        "optim.momentum": (0.9, "tf2/run.py: momentum=0.9"),
        "optim.lars_trust_coefficient": (0.001, "tf2/lars_optimizer.py: EETA_DEFAULT = 0.001"),
        "optim.clip_grad_norm": (0.0, "tf2/model.py: no gradient clipping"),
        "simclr.temperature": (0.5, f"{readme}: --temperature=0.5"),
        "simclr.proj_hidden_dims": ((512, 512),
                                    "tf2/run.py num_proj_layers=3; tf2/model.py: hidden width = input (512)"),
        "simclr.proj_dim": (128, "tf2/run.py: proj_out_dim=128"),
        "augment.crop_scale": ((0.08, 1.0), "tf2/data_util.py crop_and_resize: area_range=(0.08, 1.0)"),
        "augment.crop_ratio": ((3 / 4, 4 / 3), "tf2/data_util.py crop_and_resize: (3/4, 4/3)"),
        "augment.flip_prob": (0.5, "tf2/data_util.py: tf.image.random_flip_left_right"),
        "augment.brightness": (0.4, f"{readme}: --color_jitter_strength=0.5; data_util: 0.8 * strength"),
        "augment.contrast": (0.4, f"{readme}: --color_jitter_strength=0.5; data_util: 0.8 * strength"),
        "augment.saturation": (0.4, f"{readme}: --color_jitter_strength=0.5; data_util: 0.8 * strength"),
        "augment.hue": (0.1, f"{readme}: --color_jitter_strength=0.5; data_util: 0.2 * strength"),
        "augment.jitter_prob": (0.8, "tf2/data_util.py random_color_jitter: p=0.8"),
        "augment.grayscale_prob": (0.2, "tf2/data_util.py random_color_jitter: to_grayscale p=0.2"),
        "augment.blur_prob": (0.0, f"{readme}: --use_blur=False"),
        "augment.solarize_prob": (0.0, "tf2/data_util.py: no solarization"),
    }


def moco_v3_vit_tiny_cifar10() -> dict:
    """facebookresearch/moco-v3: {key: (value, where)}."""
    batch, epochs = 1024, 300
    command = "CONFIG.md ViT-Small 1-node command"
    return {
        "method": ("moco", "main_moco.py: MoCo v3"),
        "model.frozen_patch_embed": (True, f"{command}: --stop-grad-conv1"),
        "model.posemb": ("sincos2d", "vits.py: build_2d_sincos_position_embedding, requires_grad=False"),
        "model.pool": ("cls", "vits.py: timm VisionTransformer class-token output"),
        "model.mlp_ratio": (4.0, "vits.py: mlp_ratio=4"),
        "moco.temperature": (0.2, f"{command}: --moco-t=.2"),
        "moco.momentum": (0.99, f"main_moco.py: --moco-m=0.99 with {command} --moco-m-cos"),
        "moco.proj_hidden_dims": ((4096, 4096), "moco/builder.py MoCo_ViT: 3-layer projector, --moco-mlp-dim=4096"),
        "moco.proj_dim": (256, "main_moco.py: --moco-dim=256"),
        "moco.pred_hidden_dims": ((4096,), "moco/builder.py MoCo_ViT: 2-layer predictor, --moco-mlp-dim=4096"),
        "moco.pred_last_bn": (True, "moco/builder.py: _build_mlp(2, dim, mlp_dim, dim) last_bn=True"),
        "moco.view_blur_probs": ((1.0, 0.1), "main_moco.py: augmentation1 blur p=1.0, augmentation2 p=0.1"),
        "moco.view_solarize_probs": ((0.0, 0.2), "main_moco.py: augmentation2 Solarize p=0.2"),
        "data.batch_size": (batch, f"{command}: -b 1024"),
        "total_steps": (epochs * CIFAR10_TRAIN // batch, f"{command}: --epochs=300"),
        "optim.name": ("adamw", f"{command}: --optimizer=adamw"),
        "optim.base_lr": (1.5e-4, f"{command}: --lr=1.5e-4"),
        "optim.lr_scaling": ("linear", "main_moco.py: args.lr = args.lr * args.batch_size / 256"),
        "optim.schedule": ("cosine", "main_moco.py adjust_learning_rate: half-cycle cosine"),
        "optim.warmup_steps": (40 * CIFAR10_TRAIN // batch, f"{command}: --warmup-epochs=40"),
        "optim.end_lr_ratio": (0.0, "main_moco.py adjust_learning_rate: cosine to 0"),
        "optim.weight_decay": (0.1, f"{command}: --weight-decay=.1"),
        "optim.b1": (0.9, "torch.optim.AdamW default betas[0]"),
        "optim.b2": (0.999, "torch.optim.AdamW default betas[1]"),
        "optim.eps": (1e-8, "torch.optim.AdamW default eps"),
        "optim.clip_grad_norm": (0.0, "main_moco.py: no gradient clipping"),
        "augment.crop_scale": ((0.08, 1.0), "main_moco.py: RandomResizedCrop scale=(--crop-min=0.08, 1)"),
        "augment.crop_ratio": ((3 / 4, 4 / 3), "torchvision RandomResizedCrop default ratio"),
        "augment.flip_prob": (0.5, "main_moco.py: RandomHorizontalFlip()"),
        "augment.brightness": (0.4, "main_moco.py: ColorJitter(0.4, 0.4, 0.2, 0.1)"),
        "augment.contrast": (0.4, "main_moco.py: ColorJitter(0.4, 0.4, 0.2, 0.1)"),
        "augment.saturation": (0.2, "main_moco.py: ColorJitter(0.4, 0.4, 0.2, 0.1)"),
        "augment.hue": (0.1, "main_moco.py: ColorJitter(0.4, 0.4, 0.2, 0.1)"),
        "augment.jitter_prob": (0.8, "main_moco.py: RandomApply([ColorJitter], p=0.8)"),
        "augment.grayscale_prob": (0.2, "main_moco.py: RandomGrayscale(p=0.2)"),
        "augment.blur_sigma": ((0.1, 2.0), "main_moco.py: GaussianBlur([.1, 2.])"),
    }


CITED = {"configs/simclr_cifar10_resnet18.py": simclr_cifar10_resnet18(),
         "configs/moco_v3_vit_tiny_cifar10.py": moco_v3_vit_tiny_cifar10()}

# Keys a recipe file sets that do not come from its source (the docstring says why).
_RUN_KEYS = ("data.name", "data.data_dir", "checkpoint.every_steps", "log.every_steps")
ADAPTED = {"configs/simclr_cifar10_resnet18.py": _RUN_KEYS,
           "configs/moco_v3_vit_tiny_cifar10.py": _RUN_KEYS + ("model.name", "model.patch")}


def lookup(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def dotted_keys(tree, prefix="") -> set[str]:
    """{'optim.base_lr', ...}: the leaves of a nested mapping."""
    keys = set()
    for key, value in tree.items():
        if hasattr(value, "items"):
            keys |= dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


@pytest.mark.parametrize("recipe", sorted(CITED))
def test_config_matches_cited_source(recipe):
    config = config_lib.load(os.path.join(REPO, recipe))
    cited = CITED[recipe]
    assert len(cited) >= 20, "a recipe cites its source for most of its keys"
    for key, (value, source) in cited.items():
        assert source, f"{key} has no source"
        actual = lookup(config, key)
        if isinstance(value, (tuple, list)):
            assert tuple(actual) == pytest.approx(tuple(value), rel=1e-12), (key, source)
        elif isinstance(value, float):
            assert actual == pytest.approx(value, rel=1e-12), (key, source)
        else:
            assert actual == value, (key, source)


@pytest.mark.parametrize("recipe", sorted(CITED))
def test_every_key_a_recipe_sets_is_cited_or_adapted(recipe):
    user = config_lib.load_config_file(os.path.join(REPO, recipe)).to_dict()
    uncited = dotted_keys(user) - set(CITED[recipe])
    assert uncited == set(ADAPTED[recipe])


@pytest.mark.parametrize("recipe", sorted(CITED))
def test_recipe_reads_cifar10_jpeg_under_the_data_root(recipe, tmp_path, monkeypatch):
    config = config_lib.load(os.path.join(REPO, recipe))
    assert config.data.name == "cifar10_jpeg" and config.data.data_dir == "cifar10-jpeg"
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(config.data.data_dir) == str(tmp_path / "cifar10-jpeg")


def test_simclr_imagenet_scale_recipe_has_imagenet_colour_strength_and_blur():
    # tf2/run.py: color_jitter_strength=1.0 (the 0.5 of its CIFAR base is CIFAR's); blur on
    config = config_lib.load(os.path.join(REPO, "configs", "scale", "simclr_resnet50.py"))
    augment = config.augment
    assert (augment.brightness, augment.contrast, augment.saturation, augment.hue) == (
        0.8, 0.8, 0.8, 0.2)
    assert augment.blur_prob == 0.5
