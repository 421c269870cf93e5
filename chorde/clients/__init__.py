"""Cache clients: every one honours :class:`chorde.clients.base.BaseCacheClient`."""
