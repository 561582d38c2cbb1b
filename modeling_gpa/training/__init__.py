"""Training: what the scripts share around the model (command-line arguments, trainer pieces)."""
