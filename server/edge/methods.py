"""Which HTTP methods each REST path serves, from the descriptor's `google.api.http` rules, so
the edge can answer a known path's other methods with 405 and an `Allow` header (RFC 9110).

Envoy's transcoder knows only "this method and path map to no RPC" (404, or 400 from the
HTTP/1 codec for a method it does not know, such as QUERY). envoy/envoy.yaml.j2 turns those
local replies into 405 + Allow where the path is one of ours (`local_reply_config` mappers on
the path, the method, and the status), and leaves every other path a 404.

One more case reaches a replica instead: a literal path that a template also matches
(`DELETE /api/v1/users/me` would transcode to DeleteUser with id "me"). `shadowed()` lists
those; a small Lua filter answers them with the same 405 before the transcoder runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

PACKAGE = "taskapi.v1"
# What one path segment variable matches (the transcoder's `*`), and `**` (any rest of the path).
_SEGMENT = "[^/?#:]+"  # a segment with a `:verb` is no variable's (the transcoder splits the verb off)
_REST = "[^?#]+"
_QUERY = "/?([?#].*)?"  # a trailing slash is the same path to the transcoder


@dataclass(frozen=True)
class PathMethods:
    """One REST path template and the methods it serves (uppercase, in a stable order)."""

    template: str  # /api/v1/tasks/{id}, as in the http rule
    regex: str  # RE2: the whole :path header, query string included
    methods: tuple[str, ...]

    @property
    def allow(self) -> str:
        return ", ".join(self.methods)


def path_methods(descriptor: Path) -> list[PathMethods]:
    """Every REST path with the methods it serves: literal paths first, so that the first regex
    that matches a request names the methods of its path."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor).read_bytes())
    methods: dict[str, list[str]] = {}
    for file in fds.file:
        if file.package != PACKAGE:
            continue
        for service in file.service:
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb is None:
                        continue
                    if verb == "custom":
                        verb, template = binding.custom.kind, binding.custom.path
                    else:
                        template = getattr(binding, verb)
                    # One regex per path shape: /tasks/{id} and /tasks/{task.id} are the same path.
                    known = methods.setdefault(_regex(template), [])
                    if verb.upper() not in known:
                        known.append(verb.upper())
    templates = {_regex(t): t for t in _templates(fds)}
    ordered = sorted(methods, key=lambda regex: (_SEGMENT in regex or _REST in regex, regex))
    return [PathMethods(templates[regex], regex, tuple(_ordered(methods[regex]))) for regex in ordered]


def shadowed(paths: list[PathMethods]) -> list[tuple[PathMethods, tuple[str, ...]]]:
    """Literal paths with the methods a template would take for them (they must answer 405)."""
    out = []
    for literal in paths:
        if "{" in literal.template:
            continue
        taken = {
            method
            for other in paths
            if other is not literal and re.fullmatch(other.regex, literal.template)
            for method in other.methods
            if method not in literal.methods
        }
        if taken:
            out.append((literal, tuple(_ordered(taken))))
    return out


def _templates(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    found = []
    for file in fds.file:
        for service in file.service if file.package == PACKAGE else ():
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb is not None:
                        found.append(binding.custom.path if verb == "custom" else getattr(binding, verb))
    return found


def _regex(template: str) -> str:
    parts = re.split(r"(\{[^}]*\})", template)
    out = []
    for part in parts:
        if part.startswith("{"):
            out.append(_REST if part.endswith("=**}") else _SEGMENT)
        else:
            out.append(re.escape(part))
    return "".join(out) + _QUERY


def _ordered(methods: object) -> list[str]:
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    assert isinstance(methods, list | set | tuple)
    return sorted(methods, key=lambda m: (order.index(m) if m in order else len(order), m))
