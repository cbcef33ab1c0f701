// The filter bar of the task list: search as one types, status, priority, tags, due
// range and sort. It only changes the route (the URL); the list follows the route.

import { useEffect, useState } from "preact/hooks";

import { PRIORITY_LABELS, STATUS_LABELS } from "../labels.js";
import { SORTS, hasFilters } from "../route.js";
import { Field } from "../ui.jsx";
import { parseTags } from "./TaskEditor.jsx";

export const CLEARED = { status: "", priority: "", tags: [], dueFrom: "", dueTo: "", q: "" };

export function Filters({ route, navigate }) {
  const [open, setOpen] = useState(false);
  const [q, setQ] = useState(route.q);
  const [tags, setTags] = useState(route.tags.join(", "));
  // Follow the URL when it changes from outside (Back, a tag clicked in the list).
  useEffect(() => setQ((current) => (current.trim() === route.q ? current : route.q)), [route.q]);
  useEffect(() => setTags(route.tags.join(", ")), [route.tags.join(",")]);
  // Searching as one types: the URL follows after a pause, replacing (not adding) history.
  useEffect(() => {
    if (q.trim() === route.q) return undefined;
    const timer = setTimeout(() => navigate({ q: q.trim() }, { replace: true }), 300);
    return () => clearTimeout(timer);
  }, [q]);
  const active = [route.status, route.priority, route.tags.length, route.dueFrom, route.dueTo].filter(Boolean).length;
  const applyTags = () => navigate({ tags: parseTags(tags) });

  return (
    <form
      class="filters"
      role="search"
      aria-label="Filter tasks"
      onSubmit={(event) => {
        event.preventDefault();
        navigate({ q: q.trim(), tags: parseTags(tags) });
      }}
    >
      <div class="search-row">
        <Field id="filter-q" label="Search" type="search" placeholder="Title or description" value={q}
          onInput={(e) => setQ(e.currentTarget.value)} />
        <button type="button" class="secondary filters-toggle" aria-expanded={open ? "true" : "false"}
          aria-controls="filter-panel" onClick={() => setOpen(!open)}>
          Filters{active ? ` (${active})` : ""}
        </button>
      </div>
      <div id="filter-panel" class={open ? "filter-panel open" : "filter-panel"}>
        <Field id="filter-status" label="Status" as="select" value={route.status}
          onChange={(e) => navigate({ status: e.currentTarget.value })}>
          <option value="">Any status</option>
          {Object.entries(STATUS_LABELS).map(([value, label]) => (
            <option value={value}>{label}</option>
          ))}
        </Field>
        <Field id="filter-priority" label="Priority" as="select" value={route.priority}
          onChange={(e) => navigate({ priority: e.currentTarget.value })}>
          <option value="">Any priority</option>
          {Object.entries(PRIORITY_LABELS).map(([value, label]) => (
            <option value={value}>{label}</option>
          ))}
        </Field>
        <Field id="filter-tags" label="Tags" value={tags} placeholder="work, home" autocomplete="off"
          onInput={(e) => setTags(e.currentTarget.value)} onChange={applyTags} />
        <Field id="filter-dueFrom" label="Due from" type="date" value={route.dueFrom}
          onChange={(e) => navigate({ dueFrom: e.currentTarget.value })} />
        <Field id="filter-dueTo" label="Due until" type="date" value={route.dueTo}
          onChange={(e) => navigate({ dueTo: e.currentTarget.value })} />
        <Field id="filter-sort" label="Sort by" as="select" value={route.sort}
          onChange={(e) => navigate({ sort: e.currentTarget.value })}>
          {Object.entries(SORTS).map(([value, { label }]) => (
            <option value={value}>{label}</option>
          ))}
        </Field>
        <button type="button" class="link clear-filters" disabled={!hasFilters(route)} onClick={() => {
          setQ("");
          setTags("");
          navigate(CLEARED);
        }}>
          Clear filters
        </button>
      </div>
    </form>
  );
}
