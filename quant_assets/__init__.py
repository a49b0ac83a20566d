"""quant_assets: the Dagster layer (partitions, assets, checks, resources). Thin by design:
asset bodies call quant_core and record metadata."""
