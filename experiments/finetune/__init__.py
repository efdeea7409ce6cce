"""experiments/finetune as a package: its scripts run as `python -m experiments.finetune.SCRIPT`."""
