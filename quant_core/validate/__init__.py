"""Out-of-sample evidence: walk-forward folds and their statistics."""
