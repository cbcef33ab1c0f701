"""Replicas discovered through DNS (`EdgeConfig.upstream_dns`, Envoy's STRICT_DNS), as the
Kubernetes and compose configs in deploy/ do: a real Envoy resolves a name to a real replica."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from taskapi.server import edge
from taskapi.server.app import run_server
from tests.conftest import make_settings
from tests.e2e.conftest import assert_error
from tests.support.edge import RestClient, edge_config, running_edge

UNAUTHENTICATED = 16


def test_dns_upstream_renders_a_strict_dns_cluster(tmp_path: Path) -> None:
    config = edge_config([("taskapi-server", 50051)], upstream_dns=True, dns_refresh_seconds=3)
    rendered = yaml.safe_load(edge.render(config))
    (cluster,) = [c for c in rendered["static_resources"]["clusters"] if c["name"].startswith("taskapi_")]
    # STRICT_DNS, in the form Envoy 1.40 no longer calls deprecated: the DNS cluster extension.
    dns = cluster["cluster_type"]["typed_config"]
    assert "type" not in cluster
    assert dns["@type"].endswith("envoy.extensions.clusters.dns.v3.DnsCluster")
    assert dns["dns_refresh_rate"] == "3.000s"
    assert dns["all_addresses_in_single_endpoint"] is False
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "taskapi-server", "port_value": 50051}
    result = edge.validate(edge.write(config, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deprecated" not in result.stdout + result.stderr


def test_static_upstreams_stay_static() -> None:
    rendered = yaml.safe_load(edge.render(edge_config([("127.0.0.1", 50051)])))
    (cluster,) = [c for c in rendered["static_resources"]["clusters"] if c["name"].startswith("taskapi_")]
    assert cluster["type"] == "STATIC"
    assert "cluster_type" not in cluster


def test_dns_upstream_needs_a_positive_refresh() -> None:
    with pytest.raises(ValueError, match="dns_refresh_seconds"):
        edge.render(edge_config([("taskapi-server", 50051)], upstream_dns=True, dns_refresh_seconds=0))


def test_descriptor_at_names_where_envoy_reads_it() -> None:
    rendered = edge.render(edge_config([("127.0.0.1", 1)], descriptor_at="/opt/taskapi/taskapi.binpb"))
    assert 'proto_descriptor: "/opt/taskapi/taskapi.binpb"' in rendered
    # The strict-JSON filter's allow-list still comes from the descriptor read at render time.
    assert "taskapi.v1.TaskService" in rendered


def test_envoy_finds_a_replica_by_name_and_routes_to_it(redis_url: str, tmp_path: Path) -> None:
    # "localhost" is in /etc/hosts, which Envoy's resolver reads like a DNS answer.
    with run_server(make_settings(redis_url)) as replica:
        with running_edge([("localhost", replica.port)], tmp_path, upstream_dns=True, dns_refresh_seconds=0.5) as envoy:
            response = RestClient(envoy.rest_url).get("tasks")
            # UNAUTHENTICATED comes from the replica's auth interceptor: the call reached it.
            assert_error(response, 401, UNAUTHENTICATED)
