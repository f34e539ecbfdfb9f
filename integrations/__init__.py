"""Adapters to the outside world: the embedded PostgreSQL server, HTTP clients and partner simulators."""
