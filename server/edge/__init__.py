"""The Envoy edge: render `envoy/envoy.yaml.j2` (`config`) and run a real Envoy on it (`process`).

One renderer for `taskapi dev`, the end-to-end tests and deployments, so what is tested is
what runs.

    config = EdgeConfig(rest_port=8080, grpc_port=8081, admin_port=9901,
                        upstreams=[("127.0.0.1", 50051), ("127.0.0.1", 50052)])
    with Envoy(config, workdir) as envoy:
        envoy.wait_healthy(replicas=2)
"""

from taskapi.server.edge.config import (
    CLUSTER,
    DESCRIPTOR,
    IDEMPOTENT_METHODS,
    IDEMPOTENT_RETRY_ON,
    REQUEST_ID_METHODS,
    SAFE_RETRY_ON,
    SERVICE_CLUSTERS,
    SERVICES,
    EdgeConfig,
    render,
    write,
)
from taskapi.server.edge.process import Envoy, envoy_binary, validate

__all__ = [
    "CLUSTER",
    "DESCRIPTOR",
    "IDEMPOTENT_METHODS",
    "IDEMPOTENT_RETRY_ON",
    "REQUEST_ID_METHODS",
    "SAFE_RETRY_ON",
    "SERVICE_CLUSTERS",
    "SERVICES",
    "EdgeConfig",
    "Envoy",
    "envoy_binary",
    "render",
    "validate",
    "write",
]
