"""Partial updates (AIP-134): one rule for every Update RPC (tasks, one's account, admins').

- Without `update_mask`, the update is the fields the body sets (proto3 presence: Envoy
  derives no mask from a JSON body). Output-only fields in a body are ignored (AIP-203).
- With a mask, exactly the named fields are written (JSON or proto spelling). A named field
  the body leaves out is reset to its default; a field without a default (a required one:
  a task's title, a user's name) is then a 400 naming it. Naming an unknown or output-only
  field, or one this caller may not edit, is a 400 on `update_mask`.
- `*` names every field the caller may edit: a full replacement, resets included.
- A field given the value it has is no change, and an update without changes writes
  nothing (same etag and update time): a client may send back the resource it read,
  even with fields it may not edit, as long as it does not change them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskapi.server.domain.errors import InvalidArgument

_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


@dataclass(frozen=True)
class UpdateRule:
    """How one resource type is updated; `values` and the resource use proto field names."""

    resource: str  # the request field that holds the resource, for error paths: "task"
    type_name: str  # for messages: "Task"
    fields: tuple[str, ...]  # every updatable field
    defaults: Mapping[str, Any]  # what a masked, absent field is reset to; not listed: required
    output_only: frozenset[str]

    def paths(self, mask: Sequence[str] | None, present: Iterable[str], editable: Collection[str]) -> set[str]:
        """The fields this update may write; an invalid mask is refused before any read."""
        if not mask:
            return {name for name in self.fields if name in present}
        if list(mask) == ["*"]:
            return {name for name in self.fields if name in editable}
        paths = set()
        for raw in mask:
            path = _CAMEL_HUMP.sub("_", raw).lower()  # JSON spelling -> proto name
            if path in self.output_only:
                raise InvalidArgument.field("update_mask", f"{raw!r} is output only and cannot be updated")
            if path not in self.fields:
                raise InvalidArgument.field("update_mask", f"{raw!r} is not a field of {self.type_name}")
            paths.add(path)
        _refuse_uneditable(paths, editable)
        return paths

    def changes(
        self, paths: Collection[str], values: Mapping[str, Any], current: object, editable: Collection[str]
    ) -> dict[str, Any]:
        """New value per field that really changes on `current`; {} when nothing does."""
        changes: dict[str, Any] = {}
        for path in (name for name in self.fields if name in paths):
            if path in values:
                value = values[path]
            elif path in self.defaults:
                value = copy.copy(self.defaults[path])  # never share a mutable default ([])
            else:
                raise InvalidArgument.field(
                    f"{self.resource}.{path}", "is required: the update mask names it, so the body must set it"
                )
            if value != getattr(current, path):
                changes[path] = value
        _refuse_uneditable(changes, editable)  # without a mask, only real changes count
        return changes


def _refuse_uneditable(paths: Iterable[str], editable: Collection[str]) -> None:
    refused = sorted(path for path in paths if path not in editable)
    if refused:
        raise InvalidArgument.field("update_mask", f"{', '.join(refused)} cannot be changed here")
