"""The one training loop and what it runs on: determinism, sample order, state, weights, checkpoints."""
