"""quant_core: the simulation, training and validation library (never imports Dagster).

Importing the package switches JAX to float64 once, here, before any array exists: the
simulations compound products over hundreds of thousands of minutes, and float32 drifts.
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
