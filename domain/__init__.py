"""Domain rules of carbon-rewards (actions, methodologies, anti-fraud): plain Python, no web or DB imports."""
