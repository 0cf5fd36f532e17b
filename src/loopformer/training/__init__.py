"""Training: the loop, depth samplers, recipes, checkpoints and run directories."""
