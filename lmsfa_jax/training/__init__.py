"""Training: config defaults, optimiser recipe, TrainState, jitted step, checkpoints, loop."""
