"""The Kubernetes manifests: Deployments (server in one piece or split per service, worker,
Envoy) with native gRPC probes, security contexts and the server's drain; headless Services
for Envoy's DNS discovery; an HPA and a PodDisruptionBudget per server Deployment; every
setting by reference to the ConfigMap or the Secret (names only)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from stack import (
    CONFIG_MAP,
    EDGE_GRPC_PORT,
    EDGE_PRE_STOP_SECONDS,
    GRPC_PORT,
    IMAGE,
    METRICS_PORT,
    PRE_STOP_SECONDS,
    REST_PORT,
    SECRET,
    SERVER_TERMINATION_SECONDS,
    SETTINGS,
    STOP_MARGIN_SECONDS,
    UID,
    WATCH_PORT,
    WORKER_METRICS_PORT,
    WORKER_TERMINATION_SECONDS,
    Manifest,
    edge_config,
    split_edge_config,
)

from taskapi.server.edge import EdgeConfig
from taskapi.server.edge import render as render_edge


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "taskapi",
    }


def metadata(name: str, component: str) -> Manifest:
    return {"name": name, "labels": labels(name, component)}


def environment(process: str) -> list[Manifest]:
    """Every setting, by reference: ConfigMap keys (optional: absent means the code's default),
    Secret keys (optional unless this process needs them, so a missing one stops the pod)."""
    entries: list[Manifest] = []
    for setting in SETTINGS:
        source: Manifest
        if setting.secret:
            optional = process not in setting.required_by
            source = {"secretKeyRef": {"name": SECRET, "key": setting.name, "optional": optional}}
        else:
            source = {"configMapKeyRef": {"name": CONFIG_MAP, "key": setting.name, "optional": True}}
        entries.append({"name": setting.name, "valueFrom": source})
    return entries


def container_security() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def spread(name: str) -> list[Manifest]:
    """Replicas across zones, then nodes; preferred, so a small cluster still schedules them."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "matchLabelKeys": ["pod-template-hash"],  # this rollout's pods only
        }
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> Manifest:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def deployment(
    name: str,
    component: str,
    container: Manifest,
    *,
    replicas: int | None,
    grace: int,
    volumes: Sequence[Manifest] = (),
    annotations: dict[str, str] | None = None,
) -> Manifest:
    template_metadata: Manifest = {"labels": labels(name, component)}
    if annotations:
        template_metadata["annotations"] = annotations
    spec: Manifest = {
        "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": template_metadata,
            "spec": {
                "serviceAccountName": name,
                "automountServiceAccountToken": False,  # nothing here talks to the Kubernetes API
                "securityContext": pod_security(),
                "terminationGracePeriodSeconds": grace,
                "topologySpreadConstraints": spread(name),
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, *volumes],
            },
        },
    }
    if replicas is not None:  # None: the HPA owns the count (kubectl apply must not reset it)
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, component), "spec": spec}


def service_account(name: str, component: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, component),
        "automountServiceAccountToken": False,
    }


def serves_tasks(args: Sequence[str]) -> bool:
    """True unless `--services` leaves the task service (and so its watch server) out."""
    return "--services" not in args or "tasks" in args[list(args).index("--services") + 1].split(",")


def server_container(args: Sequence[str]) -> Manifest:
    health = {"grpc": {"port": GRPC_PORT, "service": ""}}  # grpc.health.v1 on the whole server
    return {
        "name": "server",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": list(args),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            *([{"name": "watch", "containerPort": WATCH_PORT, "protocol": "TCP"}] if serves_tasks(args) else []),
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": environment("server"),
        # Readiness follows the drain: NOT_SERVING takes the pod out of the Service at once.
        "readinessProbe": {**health, "periodSeconds": 2, "failureThreshold": 1, "timeoutSeconds": 1},
        # Liveness only restarts a replica that stops answering for half a minute.
        "livenessProbe": {**health, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
        "startupProbe": {**health, "periodSeconds": 1, "failureThreshold": 60, "timeoutSeconds": 1},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": resources("500m", "256Mi", "1", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def server(name: str, args: Sequence[str]) -> list[Manifest]:
    """A server Deployment with its headless Service (Envoy's DNS discovery), HPA and PDB."""
    watch_port = {"name": "watch", "port": WATCH_PORT, "targetPort": "watch", "appProtocol": "kubernetes.io/h2c"}
    component = "server"
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}
    return [
        service_account(name, component),
        deployment(
            name,
            component,
            server_container(args),
            replicas=None,
            grace=SERVER_TERMINATION_SECONDS,
            annotations=annotations,
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(name, component),
            "spec": {
                # Headless: the name resolves to every ready pod, and Envoy balances over them
                # (a ClusterIP would pin each of Envoy's HTTP/2 connections to one pod).
                "clusterIP": "None",
                "selector": {"app.kubernetes.io/name": name},
                "ports": [
                    {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
                    # WatchTasks streams (Envoy's taskapi_watch cluster), where the pod serves tasks.
                    *([watch_port] if serves_tasks(args) else []),
                ],
            },
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": metadata(name, component),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 3,
                "maxReplicas": 20,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
            },
        },
        disruption_budget(name, component),
    ]


def disruption_budget(name: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": name}}},
    }


def worker() -> list[Manifest]:
    name, component = "taskapi-worker", "worker"
    metrics = {"httpGet": {"path": "/metrics", "port": "metrics"}}
    container = {
        "name": "worker",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["worker"],
        "ports": [{"name": "metrics", "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"}],
        "env": environment("worker"),
        # The worker serves no gRPC; its /metrics endpoint answers while it runs.
        "readinessProbe": {**metrics, "periodSeconds": 10, "timeoutSeconds": 2},
        "livenessProbe": {**metrics, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
        "resources": resources("250m", "256Mi", "1", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(WORKER_METRICS_PORT)}
    return [
        service_account(name, component),
        deployment(name, component, container, replicas=2, grace=WORKER_TERMINATION_SECONDS, annotations=annotations),
    ]


def config_map() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(CONFIG_MAP, "config"),
        "data": {setting.name: setting.value for setting in SETTINGS if setting.value is not None},
    }


EDGE = "taskapi-edge"


def edge_service() -> list[Manifest]:
    component = "edge"
    return [
        service_account(EDGE, component),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata(EDGE, component),
            "spec": {
                "type": "ClusterIP",  # put your load balancer or Ingress in front (deploy/README.md)
                "selector": {"app.kubernetes.io/name": EDGE},
                "ports": [
                    {"name": "http", "port": REST_PORT, "targetPort": "http"},
                    {"name": "grpc", "port": EDGE_GRPC_PORT, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
                ],
            },
        },
        disruption_budget(EDGE, component),
    ]


def edge(config: EdgeConfig) -> list[Manifest]:
    """Envoy's ConfigMap and Deployment; the pods roll when the config changes."""
    component = "edge"
    rendered = render_edge(config)
    tcp = {"tcpSocket": {"port": "http"}}  # the admin interface stays on loopback
    container = {
        "name": "envoy",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["envoy"],
        "args": ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info", "--concurrency", "2", "--disable-hot-restart"],
        "ports": [
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": EDGE_GRPC_PORT, "protocol": "TCP"},
        ],
        # Envoy opens its listeners once its clusters have warmed up (resolved, health-checked).
        "readinessProbe": {**tcp, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 1},
        "livenessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
        "lifecycle": {"preStop": {"sleep": {"seconds": EDGE_PRE_STOP_SECONDS}}},
        "resources": resources("250m", "128Mi", "2", "256Mi"),
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "config", "mountPath": "/etc/envoy", "readOnly": True},
        ],
    }
    checksum = hashlib.sha256(rendered.encode()).hexdigest()
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(EDGE, component),
            "data": {"envoy.yaml": rendered},
        },
        deployment(
            EDGE,
            component,
            container,
            replicas=2,
            grace=EDGE_PRE_STOP_SECONDS + STOP_MARGIN_SECONDS,
            volumes=[{"name": "config", "configMap": {"name": EDGE}}],
            annotations={"checksum/envoy-config": checksum},
        ),
    ]


SINGLE = ("taskapi-server", ["serve"])
SPLIT = (
    ("taskapi-accounts", ["serve", "--services", "auth,users"]),
    ("taskapi-tasks", ["serve", "--services", "tasks"]),
)


def kubernetes() -> dict[str, list[Manifest]]:
    single_name, single_args = SINGLE
    single_edge = edge_config([(single_name, GRPC_PORT)], [(single_name, WATCH_PORT)])
    split_edge = split_edge_config()
    return {
        "kubernetes/common.yaml": [config_map(), *worker(), *edge_service()],
        "kubernetes/single.yaml": [
            *server(single_name, single_args),
            *edge(single_edge),
        ],
        "kubernetes/split.yaml": [
            *(document for name, args in SPLIT for document in server(name, args)),
            *edge(split_edge),
        ],
    }
