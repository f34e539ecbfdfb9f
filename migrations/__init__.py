"""Alembic migrations of carbon-rewards (a package so that installed copies can find them)."""
