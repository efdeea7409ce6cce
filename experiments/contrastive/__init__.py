"""experiments/contrastive as a package: its scripts run as `python -m experiments.contrastive.SCRIPT`."""
