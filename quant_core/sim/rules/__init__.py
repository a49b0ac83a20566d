"""Weight-update rules: each maps estimator outputs and parameters to a per-chunk weight change."""
