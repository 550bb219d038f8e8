"""Training: the downstream MLP, the trial splits, synthetic data and the sweep engine."""
