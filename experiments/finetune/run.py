"""The fine-tuning experiment on Fashion-MNIST: pretrained vs scratch, and the fine-tuning modes.

  python experiments/finetune/run.py --root=/tmp/ft_runs [--only=NAME,...]

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
and the forgetting measure. experiments/finetune/summarize.py makes the
tables and plots.
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
MODES = {
    "linear_probe": {"finetune.mode": "linear_probe"},
    "lp_ft": {"finetune.mode": "lp_ft", "finetune.lp_steps": 100, "finetune.lp_base_lr": 2e-2},
    "layer_decay": {"finetune.layer_decay": 0.65},
    "l2sp": {"finetune.l2sp": 0.01},
    "unfreeze": {"finetune.unfreeze_every": 40},
}


def runs(root: str) -> dict[str, list[str]]:
    """{run name: jaxssl.main arguments}, in the order they run."""
    def finetune(init: str, overrides: dict) -> list[str]:
        checkpoint = os.path.join(root, init) if init else ""
        return [f"--config={FINETUNE_CONFIG}:{checkpoint}",
                *(f"--config.{k}={v}" for k, v in overrides.items())]

    plan = {"simclr_vit": [f"--config={PRETRAIN_CONFIG}"], "mae_vit": [f"--config={MAE_CONFIG}"]}
    inits = {"simclr": "simclr_vit", "mae": "mae_vit", "scratch": ""}
    for name, init in inits.items():
        for labels, fraction in LABEL_FRACTIONS.items():
            plan[f"{name}_full_{labels}"] = finetune(init, {"finetune.label_fraction": fraction})
    for mode, overrides in MODES.items():
        plan[f"simclr_{mode}_10pct"] = finetune("simclr_vit", overrides)
    return plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="folder of the runs' workdirs")
    parser.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = parser.parse_args()
    selected = set(filter(None, args.only.split(",")))
    os.makedirs(args.root, exist_ok=True)
    for name, arguments in runs(args.root).items():
        workdir = os.path.join(args.root, name)
        finished = os.path.isfile(os.path.join(workdir, "results.json"))
        if finished or (selected and name not in selected):
            continue
        start = time.time()
        command = [sys.executable, "-m", "jaxssl.main", *arguments, f"--workdir={workdir}"]
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
