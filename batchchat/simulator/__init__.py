"""batchchat's OpenAI-compatible simulator (being built)."""
