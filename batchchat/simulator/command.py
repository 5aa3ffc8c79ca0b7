"""`batchchat serve` (placeholder until the simulator lands)."""


def serve() -> None:
    """Run the OpenAI-compatible simulator."""
    raise SystemExit("not yet")
