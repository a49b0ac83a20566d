"""JAX simulation of pools: estimators, weight-update rules, fine weights, reserve engines."""
