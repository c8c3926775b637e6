"""What a run records about itself beside its metrics: provenance (provenance.py) and experiment tracking (wandb)."""
