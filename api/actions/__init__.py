"""Low-carbon actions: linked partner accounts, ingestion (push and claim), reviews and resident views."""
