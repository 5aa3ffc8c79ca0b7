"""The request cache (`--cache PATH`): answers kept in SQLite across runs, keyed by the request as sent."""

from batchchat.cache.store import CachedAnswer, CacheStats, RequestCache, request_key

__all__ = ["CacheStats", "CachedAnswer", "RequestCache", "request_key"]
