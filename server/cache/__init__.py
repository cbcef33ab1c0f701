"""The shared cache on Redis: the read cache, live-session entries, and the read plan that
lets both ride the rate limiter's one round trip. The service lives without it: every read
degrades to a miss, every write that must not be lost is replayed when Redis is back."""
