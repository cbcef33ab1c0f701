"""The domain: Task API's rules in plain Python.

No grpc, redis, mongoengine, pymongo or bson here (import-linter enforces it): entities are
dataclasses, ids are strings, and what the rules need from the outside world (storage, the
shared cache) comes in through the protocols in `ports`, implemented by `taskapi.server.store`
and `taskapi.server.cache` and handed over by the wiring (`taskapi.server.app`).
"""
