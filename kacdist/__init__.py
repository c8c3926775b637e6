"""kacdist: train, distil and serve few-step image generators based on Kac flows (DistillKac)."""

__version__ = "0.1.0"
