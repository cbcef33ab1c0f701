"""Every deployment file in deploy/, rendered from this one source.

    .venv/bin/python deploy/render.py generate   rewrite the files below
    .venv/bin/python deploy/render.py check      exit 1 when a committed file differs (a test runs it)

    deploy/kubernetes/common.yaml   settings (ConfigMap), the worker, the edge's Service
    deploy/kubernetes/single.yaml   one server Deployment serving every service, and its Envoy
    deploy/kubernetes/split.yaml    the per-service layout: accounts (auth, users) and tasks
    deploy/compose.yaml             the whole stack on one host
    deploy/envoy/compose.yaml       the compose stack's Envoy config

What they share is in deploy/stack.py: `SETTINGS`, one row per environment variable that
Settings reads (a test compares them, so a new setting cannot be forgotten), the drain timings
(the server's own TASKAPI_DRAIN_SECONDS and TASKAPI_SHUTDOWN_GRACE_SECONDS, see cli.serve), and
the Envoy configs, from `taskapi.server.edge`, the renderer `taskapi dev` and the tests use.
The Kubernetes side is deploy/manifests.py, the compose side deploy/compose_stack.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import compose_stack
import manifests
import yaml
from compose_stack import Quoted
from stack import GRPC_PORT, WATCH_PORT, Manifest, edge_config

from taskapi.server.edge import render as render_edge

ROOT = Path(__file__).resolve().parent

HEADER = "# Rendered by deploy/render.py; do not edit. Regenerate: .venv/bin/python deploy/render.py generate\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (Envoy's config in its ConfigMap) as literal blocks, readable as is;
    a value used twice written out twice (no `&id001` anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _quoted(dumper: yaml.SafeDumper, value: Quoted) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="'")


_Dumper.add_representer(str, _string)
_Dumper.add_representer(Quoted, _quoted)


def dump(documents: Iterable[Manifest]) -> str:
    parts = [
        yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True) for document in documents
    ]
    return HEADER + "---\n".join(parts)


def files() -> dict[str, str]:
    """Every rendered file, by path under deploy/."""
    rendered = {path: dump(documents) for path, documents in manifests.kubernetes().items()}
    rendered["compose.yaml"] = dump([compose_stack.compose()])
    rendered["envoy/compose.yaml"] = render_edge(edge_config([("server", GRPC_PORT)], [("server", WATCH_PORT)]))
    return rendered


def main(argv: list[str]) -> int:
    if argv not in (["generate"], ["check"]):
        print("usage: deploy/render.py generate|check", file=sys.stderr)
        return 2
    stale = []
    for relative, text in files().items():
        path = ROOT / relative
        if argv == ["generate"]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(relative)
    if stale:
        print(f"stale: {', '.join(stale)}; run .venv/bin/python deploy/render.py generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
