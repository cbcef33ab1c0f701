// The task list: quick add, filters from the URL, pages of ListTasks, inline complete
// and start (optimistic, rolled back on failure), delete with undo, and the editor.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { describeError } from "../api.js";
import { followChanges } from "../feed.js";
import { useNotify } from "../notices.js";
import { newRequestId, plural } from "../labels.js";
import { hasFilters, listQuery } from "../route.js";
import { ErrorMessage, Field, useFocusHeading, useSubmit } from "../ui.jsx";
import { TaskEditor } from "./TaskEditor.jsx";
import { CLEARED, Filters } from "./TaskFilters.jsx";
import { TaskItem } from "./TaskItem.jsx";

const PAGE_SIZE = 20;
const UNDO_MS = 6000;
const RESYNC = {}; // the feed lost track: always list again

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
  const shownTasks = useRef([]);
  shownTasks.current = page.tasks;

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

  // Live: the change feed (another tab, device or client wrote) lists the page again, so
  // filters, order and paging stay the server's; a resync does the same. Stops on sign-out
  // (this view unmounts) or when the session ends.
  useEffect(() => {
    const stop = new AbortController();
    let timer;
    let waiting = [];
    // What this page shows already (its own writes, echoed back) needs no listing.
    const shown = (change) => {
      const task = shownTasks.current.find((t) => t.id === change.task?.id);
      return change.kind === "DELETED" ? !task : task?.etag === change.task?.etag;
    };
    // Judged a moment later, in a burst one listing: the page's own write may be answered
    // after its echo arrives, and a listing then would undo an optimistic change.
    const settle = () => {
      const stale = waiting.some((change) => change === RESYNC || !shown(change));
      waiting = [];
      if (stale) reload();
    };
    const note = (change) => {
      waiting.push(change);
      clearTimeout(timer);
      timer = setTimeout(settle, 250);
    };
    followChanges(api, { onChange: note, onResync: () => note(RESYNC), signal: stop.signal });
    return () => {
      stop.abort();
      clearTimeout(timer);
    };
  }, [api, reload]);

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
          <span id="page-number">
            Page {tokens.length} of {Math.max(tokens.length, Math.ceil(page.totalSize / PAGE_SIZE))}
          </span>
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
