"""batchchat: push large batches of requests through an OpenAI-compatible API."""
