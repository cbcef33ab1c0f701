// One task in the list, with its inline actions.

import { PRIORITY_LABELS, STATUS_LABELS } from "../labels.js";
import { formatDue, isOverdue } from "../time.js";

export function TaskItem({ task, onToggle, onStart, onEdit, onDelete, onTag }) {
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
