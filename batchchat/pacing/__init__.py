"""Pacing: the request and token budgets, and where their state lives (in process or in Redis)."""
