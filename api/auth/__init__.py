"""Identity and access: who the callers are, their tokens, and what each may reach."""
