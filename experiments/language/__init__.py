"""experiments/language as a package: its scripts run as `python -m experiments.language.SCRIPT`."""
