"""The fine-tuning experiment on Fashion-MNIST: pretrained vs scratch, and the fine-tuning modes.

  python -m experiments.finetune.run --root=/tmp/ft_runs [--only=NAME,...] [--seed=N]
  python -m experiments.finetune.run --root=/tmp/ft_cifar10 --dataset=cifar10

Runs, one `jaxssl.main` workdir each under ROOT (a finished run, one with
results.json, is skipped, so rerunning resumes the experiment):

  simclr_vit                SimCLR pretraining (experiments/finetune/simclr_vit_fmnist.py)
  mae_vit                   MAE pretraining of the same ViT (configs/mae_fashion_mnist.py)
  {simclr,mae,scratch}_full_{1,10,100}pct
                            full fine-tuning with 1%, 10%, 100% of the labels, from the
                            SimCLR encoder, the MAE encoder or from initialisation
  simclr_{linear_probe,lp_ft,layer_decay,l2sp,unfreeze}_10pct
                            the other modes on 10% of the labels

Every fine-tuning run (configs/finetune_fashion_mnist.py) also reports WiSE-FT
and the forgetting measure. With --dataset=cifar10 the same ViT and recipes run on
CIFAR-10 ($JAXSSL_DATA_DIR/cifar10-jpeg): SimCLR pretraining and {simclr,scratch} x
{1,10,100}% only, without the forgetting measure (see CIFAR10_FINETUNE). experiments/finetune/summarize.py makes the
tables and plots. `--seed` sets every run's seed (pretraining included; default: the
configs' own, 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PRETRAIN_CONFIG = os.path.join(HERE, "simclr_vit_fmnist.py")
MAE_CONFIG = os.path.join(REPO, "configs", "mae_fashion_mnist.py")
FINETUNE_CONFIG = os.path.join(REPO, "configs", "finetune_fashion_mnist.py")
LABEL_FRACTIONS = {"1pct": 0.01, "10pct": 0.1, "100pct": 1.0}
# WiSE-FT is reported for full fine-tuning (3 points) and at a = 0.5 for the other modes;
# a linear probe leaves the encoder as it was, so it has none.
MODES = {
    "linear_probe": {"finetune.mode": "linear_probe", "finetune.wise_alphas": "()"},
    "lp_ft": {"finetune.mode": "lp_ft", "finetune.lp_steps": 100, "finetune.lp_base_lr": 2e-2,
              "finetune.wise_alphas": "(0.5,)"},
    "layer_decay": {"finetune.layer_decay": 0.65, "finetune.wise_alphas": "(0.5,)"},
    "l2sp": {"finetune.l2sp": 0.01, "finetune.wise_alphas": "(0.5,)"},
    "unfreeze": {"finetune.unfreeze_every": 40, "finetune.wise_alphas": "(0.5,)"},
}


# CIFAR-10: the same ViT and recipes on 32x32 colour images (64 patches of 4x4), with
# SimCLR's colour augmentation and 400 pretraining steps (CPU budget). Its forgetting measure would need a second colour data
# set, which the data root does not have, so only label efficiency is measured there.
CIFAR10_DATA = {"data.name": "cifar10_jpeg", "data.data_dir": "cifar10-jpeg"}
CIFAR10_PRETRAIN = {**CIFAR10_DATA, "total_steps": 400, "augment.brightness": 0.4, "augment.contrast": 0.4,
                    "augment.saturation": 0.4, "augment.hue": 0.1, "augment.grayscale_prob": 0.2}
CIFAR10_FINETUNE = {**CIFAR10_DATA, "finetune.forgetting.name": ""}


# Evaluation cost: WiSE-FT and forgetting mean nothing from scratch (the "pretrained"
# encoder is the initialisation); the label-fraction runs other than 10% get one WiSE point.
SCRATCH_EVALUATION = {"finetune.wise_alphas": "()", "finetune.forgetting.name": ""}
ONE_WISE_ALPHA = {"finetune.wise_alphas": "(0.5,)"}


def arguments(config: str, overrides: dict) -> list[str]:
    return [f"--config={config}", *(f"--config.{k}={v}" for k, v in overrides.items())]


def runs(root: str, dataset: str = "fashion_mnist", seed: int | None = None
         ) -> dict[str, list[str]]:
    """{run name: jaxssl.main arguments}, in the order they run."""
    cifar = dataset == "cifar10"
    seeded = {} if seed is None else {"seed": seed}

    def finetune(init: str, overrides: dict) -> list[str]:
        checkpoint = os.path.join(root, init) if init else ""
        return arguments(f"{FINETUNE_CONFIG}:{checkpoint}",
                         {**(CIFAR10_FINETUNE if cifar else {}), **seeded, **overrides})

    def full(init: str, labels: str) -> list[str]:
        overrides = {"finetune.label_fraction": LABEL_FRACTIONS[labels]}
        if not init:
            overrides.update(SCRATCH_EVALUATION)
        elif labels != "10pct":
            overrides.update(ONE_WISE_ALPHA)
        return finetune(init, overrides)

    # Most important first, so that a run stopped for time has the central comparison.
    plan = {"simclr_vit": arguments(PRETRAIN_CONFIG,
                                    {**(CIFAR10_PRETRAIN if cifar else {}), **seeded})}
    if not cifar:
        plan["mae_vit"] = arguments(MAE_CONFIG, seeded)
    for labels in ("10pct", "1pct", "100pct"):
        for name, init in (("simclr", "simclr_vit"), ("scratch", "")):
            plan[f"{name}_full_{labels}"] = full(init, labels)
    if not cifar:
        for mode, overrides in MODES.items():
            plan[f"simclr_{mode}_10pct"] = finetune("simclr_vit", overrides)
        for labels in ("10pct", "1pct", "100pct"):
            plan[f"mae_full_{labels}"] = full("mae_vit", labels)
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder of the runs' workdirs")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--dataset", default="fashion_mnist", choices=("fashion_mnist", "cifar10"))
    parser.add_argument("--seed", type=int, default=None, help="every run's seed")
    args = parser.parse_args()
    selected = set(filter(None, args.only.split(",")))
    os.makedirs(args.root, exist_ok=True)
    for name, run_arguments in runs(args.root, args.dataset, args.seed).items():
        workdir = os.path.join(args.root, name)
        finished = os.path.isfile(os.path.join(workdir, "results.json"))
        if finished or (selected and name not in selected):
            continue
        start = time.time()
        command = [sys.executable, "-m", "jaxssl.main", *run_arguments, f"--workdir={workdir}"]
        print(" ".join(command), flush=True)
        with open(os.path.join(args.root, f"{name}.log"), "w") as log:
            status = subprocess.call(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        print(f"{name}: exit {status}, {time.time() - start:.0f} s", flush=True)
        with open(os.path.join(args.root, "runtimes.tsv"), "a") as f:
            f.write(f"{name}\t{status}\t{time.time() - start:.0f}\n")
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
