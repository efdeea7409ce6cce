"""experiments/clip as a package: its scripts run as `python -m experiments.clip.SCRIPT`."""
