"""One folder per domain; quant_assets.definitions assembles them."""
