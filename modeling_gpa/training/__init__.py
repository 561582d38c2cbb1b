"""Training code: the checks that run before a training run starts."""
