"""Training: objectives over price windows and the optimisers that maximise them."""
