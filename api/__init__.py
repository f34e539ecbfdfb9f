"""HTTP layer of carbon-rewards: Litestar app factory, controllers, error mapping and the CLI."""
