"""Looking inside the loop: per-step states, their trajectories, and the logit lens."""

from .trajectory import CLASSES, classify_trajectory, describe_trajectory

__all__ = ["CLASSES", "classify_trajectory", "describe_trajectory"]
