// Create or edit a task with every field, in a modal dialog. An edit sends only the
// fields that changed (updateMask) with the etag of the version it started from; when
// someone saved a newer version meanwhile (409), the dialog shows both and lets the
// person choose.

import { useEffect, useRef, useState } from "preact/hooks";

import { PRIORITY_LABELS, STATUS_LABELS, newRequestId } from "../labels.js";
import { formatDue, fromLocalParts, timeZone, toLocalParts } from "../time.js";
import { ErrorMessage, Field, useSubmit } from "../ui.jsx";

const FIELDS = ["title", "description", "status", "priority", "dueTime", "tags"];
const FIELD_LABELS = {
  title: "Title",
  description: "Description",
  status: "Status",
  priority: "Priority",
  dueTime: "Due",
  tags: "Tags",
};

export const parseTags = (text) => [...new Set(text.split(",").map((tag) => tag.trim()).filter(Boolean))];

function toForm(task) {
  const due = toLocalParts(task?.dueTime);
  return {
    title: task?.title ?? "",
    description: task?.description ?? "",
    status: task?.status ?? "PENDING",
    priority: task?.priority ?? "MEDIUM",
    dueDate: due.date,
    dueClock: due.time,
    tags: (task?.tags ?? []).join(", "),
  };
}

/** The API's Task fields for form values; dueTime null means "no due date". */
function fromForm(values) {
  return {
    title: values.title.trim(),
    description: values.description,
    status: values.status,
    priority: values.priority,
    dueTime: fromLocalParts(values.dueDate, values.dueClock),
    tags: parseTags(values.tags),
  };
}

const same = (a, b) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

/** The fields whose value in `after` differs from `before` (both API shaped). */
function changedFields(before, after) {
  return Object.fromEntries(FIELDS.filter((name) => !same(before[name], after[name])).map((name) => [name, after[name]]));
}

function show(name, value) {
  if (name === "status") return STATUS_LABELS[value] || value;
  if (name === "priority") return PRIORITY_LABELS[value] || value;
  if (name === "dueTime") return value ? formatDue(value) : "no due date";
  if (name === "tags") return value?.length ? value.join(", ") : "no tags";
  return value || "(empty)";
}

export function TaskEditor({ api, task, onSaved, onClose }) {
  const dialog = useRef(null);
  const form = useRef(null);
  // The version this edit started from: only what differs from it is sent.
  const [base, setBase] = useState(task);
  const [values, setValues] = useState(() => toForm(task));
  const [conflict, setConflict] = useState(null);
  const etag = useRef(task?.etag ?? "");
  const requestId = useRef(newRequestId());

  useEffect(() => {
    dialog.current.showModal();
  }, []);

  const { busy, errors, formError, submit, setFormError } = useSubmit(
    async () => {
      const wanted = fromForm(values);
      if (!task) {
        const { dueTime, ...rest } = wanted;
        onSaved(await api.createTask(dueTime ? wanted : rest, requestId.current), true);
        return;
      }
      const changes = changedFields(fromForm(toForm(base)), wanted);
      if (!Object.keys(changes).length) {
        onClose();
        return;
      }
      try {
        onSaved(await api.updateTask(task.id, changes, etag.current), false);
      } catch (error) {
        if (error.status === 409) {
          setConflict(await api.getTask(task.id));
          return;
        }
        if (error.status === 404) {
          setFormError("This task was deleted elsewhere. Copy what you need, then close this dialog.");
          return;
        }
        throw error;
      }
    },
    [...FIELDS, "dueDate"],
    form,
  );

  const set = (name) => (event) => setValues({ ...values, [name]: event.currentTarget.value });
  const keepMine = () => {
    etag.current = conflict.etag;
    setConflict(null);
    submit();
  };
  const useSaved = () => {
    etag.current = conflict.etag;
    setBase(conflict);
    setValues(toForm(conflict));
    setConflict(null);
  };
  const mine = fromForm(values);
  const mineChanged = changedFields(fromForm(toForm(base)), mine);
  const id = task ? "Edit task" : "New task";

  return (
    <dialog
      ref={dialog}
      class="editor"
      aria-labelledby="editor-title"
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
    >
      <form id="task-form" ref={form} onSubmit={submit} noValidate>
        <h2 id="editor-title">{id}</h2>
        {conflict && (
          <div class="conflict" role="alert" id="conflict">
            <h3>This task was changed elsewhere</h3>
            <p>
              A newer version was saved after you opened it (perhaps in another tab). “Keep my changes” saves the
              fields you changed over it; everything else stays as saved.
            </p>
            <table>
              <thead>
                <tr>
                  <th scope="col">Field</th>
                  <th scope="col">Saved version</th>
                  <th scope="col">Your edit</th>
                </tr>
              </thead>
              <tbody>
                {FIELDS.filter((name) => name in mineChanged || !same(conflict[name], mine[name])).map((name) => (
                  <tr key={name}>
                    <th scope="row">{FIELD_LABELS[name]}</th>
                    <td class="theirs">{show(name, conflict[name])}</td>
                    <td class="mine">{name in mineChanged ? show(name, mine[name]) : "not changed by you"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            <div class="buttons">
              <button type="button" id="keep-mine" onClick={keepMine}>
                Keep my changes
              </button>
              <button type="button" id="use-saved" class="secondary" onClick={useSaved}>
                Use the saved version
              </button>
            </div>
          </div>
        )}
        <Field id="task-title" label="Title" required maxLength={100} value={values.title} onInput={set("title")}
          error={errors.title} autofocus />
        <Field id="task-description" label="Description" as="textarea" rows={4} value={values.description}
          onInput={set("description")} error={errors.description} />
        <div class="row">
          <Field id="task-status" label="Status" as="select" value={values.status} onChange={set("status")}
            error={errors.status}>
            {Object.entries(STATUS_LABELS).map(([value, label]) => (
              <option value={value}>{label}</option>
            ))}
          </Field>
          <Field id="task-priority" label="Priority" as="select" value={values.priority} onChange={set("priority")}
            error={errors.priority}>
            {Object.entries(PRIORITY_LABELS).map(([value, label]) => (
              <option value={value}>{label}</option>
            ))}
          </Field>
        </div>
        <fieldset class="due">
          <legend>Due</legend>
          <div class="row">
            <Field id="task-dueTime" label="Date" type="date" value={values.dueDate} onInput={set("dueDate")}
              error={errors.dueTime || errors.dueDate} />
            <Field id="task-dueClock" label="Time" type="time" value={values.dueClock} onInput={set("dueClock")}
              disabled={!values.dueDate} />
          </div>
          <p class="hint" id="due-hint">
            In your time zone, {timeZone()}. Without a time the task is due at the end of the day.
            {values.dueDate && (
              <>
                {" "}
                <button type="button" class="link" id="clear-due" onClick={() => setValues({ ...values, dueDate: "", dueClock: "" })}>
                  Remove the due date
                </button>
              </>
            )}
          </p>
        </fieldset>
        <Field id="task-tags" label="Tags" value={values.tags} onInput={set("tags")} error={errors.tags}
          hint="Separate tags with commas, e.g. work, errands." autocomplete="off" />
        <ErrorMessage error={formError} id="editor-error" />
        <div class="buttons">
          <button type="submit" disabled={busy || Boolean(conflict)}>
            {busy ? "Saving…" : task ? "Save changes" : "Add task"}
          </button>
          <button type="button" class="secondary" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
    </dialog>
  );
}
