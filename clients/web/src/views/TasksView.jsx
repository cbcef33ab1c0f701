// The task list: quick add, filters from the URL, pages of ListTasks, inline complete
// and start (optimistic, rolled back on failure), delete with undo, and the editor.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { describeError } from "../api.js";
import { useNotify } from "../App.jsx";
import { PRIORITY_LABELS, STATUS_LABELS, newRequestId, plural } from "../labels.js";
import { SORTS, hasFilters, listQuery } from "../route.js";
import { formatDue, isOverdue } from "../time.js";
import { ErrorMessage, Field, useFocusHeading, useSubmit } from "../ui.jsx";
import { TaskEditor, parseTags } from "./TaskEditor.jsx";

const PAGE_SIZE = 20;
const UNDO_MS = 6000;

export function TasksView({ api, route, navigate }) {
  const notify = useNotify();
  const heading = useFocusHeading("tasks");
  const filterKey = JSON.stringify(listQuery(route));
  const [page, setPage] = useState({ tasks: [], totalSize: 0, nextPageToken: "" });
  // Page tokens of the pages walked through for the current filters; the last is shown.
  const [paging, setPaging] = useState({ key: filterKey, tokens: [""] });
  const tokens = paging.key === filterKey ? paging.tokens : [""];
  const pageToken = tokens[tokens.length - 1];
  const [loading, setLoading] = useState(true);
  const [loadError, setLoadError] = useState(null);
  const [reloads, setReloads] = useState(0);
  const [editing, setEditing] = useState(null);
  const opener = useRef(null);
  const sequence = useRef(0);
  // Deletes waiting for their undo window to pass.
  const pendingDeletes = useRef(new Map());
  const reload = useCallback(() => setReloads((n) => n + 1), []);

  useEffect(() => {
    const mine = ++sequence.current;
    setLoading(true);
    api
      .listTasks({ ...JSON.parse(filterKey), pageSize: PAGE_SIZE, pageToken })
      .then((result) => {
        if (mine !== sequence.current) return;
        const all = result.tasks || [];
        const shown = all.filter((task) => !pendingDeletes.current.has(task.id));
        setPage({
          tasks: shown,
          totalSize: (result.totalSize || 0) - (all.length - shown.length),
          nextPageToken: result.nextPageToken || "",
        });
        setLoadError(null);
      })
      .catch((error) => {
        if (mine !== sequence.current) return;
        error.at = Date.now();
        setLoadError(error); // the last good list stays on screen
      })
      .finally(() => {
        if (mine === sequence.current) setLoading(false);
      });
  }, [api, filterKey, pageToken, reloads]);

  // Back online: fetch what we could not.
  useEffect(() => {
    window.addEventListener("online", reload);
    return () => window.removeEventListener("online", reload);
  }, [reload]);

  const replaceTask = (task) =>
    setPage((current) => ({ ...current, tasks: current.tasks.map((t) => (t.id === task.id ? task : t)) }));

  /** Changes a task in place at once, then saves; on failure the old version comes back. */
  const patchInline = async (task, changes) => {
    replaceTask({ ...task, ...changes });
    try {
      replaceTask(await api.updateTask(task.id, changes, task.etag));
    } catch (error) {
      if (error.status === 409) {
        const latest = await api.getTask(task.id).catch(() => null);
        if (latest) replaceTask(latest);
        notify({ text: `“${task.title}” was changed elsewhere, so your change was not saved. Showing the latest version.` });
      } else if (error.status === 404) {
        setPage((current) => ({ ...current, tasks: current.tasks.filter((t) => t.id !== task.id) }));
        notify({ text: `“${task.title}” was deleted elsewhere.` });
      } else {
        replaceTask(task);
        error.at = Date.now();
        setLoadError(error);
      }
    }
  };

  const commitDelete = async (task) => {
    try {
      await api.deleteTask(task.id, task.etag);
    } catch (error) {
      if (error.status !== 404) {
        restore(task);
        notify({
          text:
            error.status === 409
              ? `“${task.title}” was changed elsewhere, so it was not deleted.`
              : `“${task.title}” was not deleted. ${describeError(error)}`,
        });
        return;
      }
    } finally {
      pendingDeletes.current.delete(task.id);
    }
    reload();
  };

  const restore = (task) => {
    const entry = pendingDeletes.current.get(task.id);
    setPage((current) => {
      const tasks = [...current.tasks];
      tasks.splice(Math.min(entry?.index ?? 0, tasks.length), 0, task);
      return { ...current, tasks, totalSize: current.totalSize + 1 };
    });
  };

  const remove = (task) => {
    const index = page.tasks.findIndex((t) => t.id === task.id);
    const entry = { task, index, undone: false };
    pendingDeletes.current.set(task.id, entry);
    setPage((current) => ({
      ...current,
      tasks: current.tasks.filter((t) => t.id !== task.id),
      totalSize: current.totalSize - 1,
    }));
    entry.close = notify({
      text: `Deleted “${task.title}”.`,
      action: {
        label: "Undo",
        run: () => {
          entry.undone = true;
          restore(task);
          pendingDeletes.current.delete(task.id);
        },
      },
      focus: true,
      timeout: UNDO_MS,
      onClose: () => entry.undone || commitDelete(task),
    });
  };

  // Leaving the view or the page sends the deletes still waiting for their undo window.
  useEffect(() => {
    const flush = () => {
      for (const { task, undone } of pendingDeletes.current.values()) {
        if (!undone) api.deleteTask(task.id, task.etag, { keepalive: true }).catch(() => {});
      }
    };
    window.addEventListener("pagehide", flush);
    return () => {
      window.removeEventListener("pagehide", flush);
      for (const entry of pendingDeletes.current.values()) entry.close?.("left");
    };
  }, [api]);

  const openEditor = (task) => {
    opener.current = document.activeElement;
    setEditing({ task });
  };
  const closeEditor = () => {
    setEditing(null);
    requestAnimationFrame(() => opener.current?.focus?.());
  };

  const first = (tokens.length - 1) * PAGE_SIZE + 1;
  const last = first + page.tasks.length - 1;
  const filtered = hasFilters(route);
  let summary = filtered ? `${plural(page.totalSize, "matching task")}` : plural(page.totalSize, "task");
  if (page.totalSize > page.tasks.length && page.tasks.length) summary += ` · showing ${first}–${last}`;

  return (
    <>
      <div class="view-head">
        <h1 ref={heading} tabIndex={-1}>
          Tasks
        </h1>
        <button type="button" id="new-task" onClick={() => openEditor(null)}>
          New task
        </button>
      </div>
      <QuickAdd
        api={api}
        onCreated={() => {
          // No notice: the task shows up right under the field, and the count is announced.
          if (tokens.length > 1) setPaging({ key: filterKey, tokens: [""] });
          else reload();
        }}
      />
      <Filters route={route} navigate={navigate} />
      <ErrorMessage error={loadError} id="list-error" onRetry={reload} />
      <p id="count" class="count" aria-live="polite">
        {loading && !page.tasks.length ? "Loading…" : summary}
      </p>
      <ul id="tasks" class="tasks" aria-busy={loading ? "true" : "false"} aria-label="Tasks">
        {page.tasks.map((task) => (
          <TaskItem
            key={task.id}
            task={task}
            onToggle={() => patchInline(task, { status: task.status === "COMPLETED" ? "PENDING" : "COMPLETED" })}
            onStart={() => patchInline(task, { status: "IN_PROGRESS" })}
            onEdit={() => openEditor(task)}
            onDelete={() => remove(task)}
            onTag={(tag) => navigate({ tags: [...new Set([...route.tags, tag])] })}
          />
        ))}
      </ul>
      {!loading && !loadError && !page.tasks.length && (
        <div class="empty">
          {filtered ? (
            <p>
              No tasks match these filters.{" "}
              <button type="button" class="link" onClick={() => navigate(CLEARED)}>
                Clear filters
              </button>
            </p>
          ) : (
            <p>No tasks yet. Add your first one above.</p>
          )}
        </div>
      )}
      {(tokens.length > 1 || page.nextPageToken) && (
        <nav class="pager" aria-label="Pages">
          <button
            type="button"
            class="secondary"
            id="prev-page"
            disabled={tokens.length === 1}
            onClick={() => setPaging({ key: filterKey, tokens: tokens.slice(0, -1) })}
          >
            Previous
          </button>
          <span id="page-number">Page {tokens.length}</span>
          <button
            type="button"
            class="secondary"
            id="next-page"
            disabled={!page.nextPageToken}
            onClick={() => setPaging({ key: filterKey, tokens: [...tokens, page.nextPageToken] })}
          >
            Next
          </button>
        </nav>
      )}
      {editing && (
        <TaskEditor
          api={api}
          task={editing.task}
          onClose={closeEditor}
          onSaved={(task, created) => {
            closeEditor();
            notify({ text: created ? `Added “${task.title}”.` : `Saved “${task.title}”.` });
            if (created && tokens.length > 1) setPaging({ key: filterKey, tokens: [""] });
            else reload();
          }}
        />
      )}
    </>
  );
}

const CLEARED = { status: "", priority: "", tags: [], dueFrom: "", dueTo: "", q: "" };

function QuickAdd({ api, onCreated }) {
  const form = useRef(null);
  const [title, setTitle] = useState("");
  const requestId = useRef(newRequestId());
  const { busy, errors, formError, submit } = useSubmit(
    async () => {
      const task = await api.createTask({ title: title.trim() }, requestId.current);
      requestId.current = newRequestId();
      setTitle("");
      onCreated(task);
    },
    ["title"],
    form,
  );
  return (
    <form id="quick-add" class="quick-add" ref={form} onSubmit={submit} noValidate>
      <Field id="quick-title" label="Add a task" name="title" placeholder="What needs doing?" maxLength={100}
        value={title} onInput={(e) => setTitle(e.currentTarget.value)} error={errors.title} autocomplete="off" />
      <button type="submit" disabled={busy}>
        Add
      </button>
      <ErrorMessage error={formError} id="quick-add-error" />
    </form>
  );
}

function Filters({ route, navigate }) {
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

function TaskItem({ task, onToggle, onStart, onEdit, onDelete, onTag }) {
  const done = task.status === "COMPLETED";
  const overdue = isOverdue(task);
  const name = <span class="sr-only"> “{task.title}”</span>;
  return (
    <li class={`task ${task.status.toLowerCase()}`} data-id={task.id}>
      <input type="checkbox" class="complete" id={`done-${task.id}`} checked={done} onChange={onToggle} />
      <label class="sr-only" for={`done-${task.id}`}>
        Done: {task.title}
      </label>
      <div class="task-main">
        <p class="title">{task.title}</p>
        {task.description && <p class="description">{task.description}</p>}
        <ul class="meta">
          <li>
            <span class={`badge status-${task.status.toLowerCase()}`}>{STATUS_LABELS[task.status]}</span>
          </li>
          <li>
            <span class={`badge priority priority-${task.priority.toLowerCase()}`}>
              {PRIORITY_LABELS[task.priority]}
              <span class="sr-only"> priority</span>
            </span>
          </li>
          {task.dueTime && (
            <li class={overdue ? "due overdue" : "due"}>
              Due <time dateTime={task.dueTime}>{formatDue(task.dueTime)}</time>
              {overdue && " (overdue)"}
            </li>
          )}
          {(task.tags || []).map((tag) => (
            <li key={tag}>
              <button type="button" class="tag" onClick={() => onTag(tag)} title={`Show tasks tagged ${tag}`}>
                <span class="sr-only">Show tasks tagged </span>#{tag}
              </button>
            </li>
          ))}
        </ul>
      </div>
      <div class="actions">
        {task.status === "PENDING" && (
          <button type="button" class="secondary start" onClick={onStart}>
            Start{name}
          </button>
        )}
        <button type="button" class="secondary edit" onClick={onEdit}>
          Edit{name}
        </button>
        <button type="button" class="danger delete" onClick={onDelete}>
          Delete{name}
        </button>
      </div>
    </li>
  );
}
