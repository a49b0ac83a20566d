"""Reserve engines: how a pool's token amounts evolve under arbitrage."""
