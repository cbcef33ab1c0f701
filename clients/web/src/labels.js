// How enum values read to people.

export const STATUS_LABELS = { PENDING: "To do", IN_PROGRESS: "In progress", COMPLETED: "Done" };
export const PRIORITY_LABELS = { HIGH: "High", MEDIUM: "Medium", LOW: "Low" };
export const ROLE_LABELS = { USER: "User", ADMIN: "Admin" };

export const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** An id for CreateTask's request_id: one per draft, so resending after a failure never duplicates. */
export const newRequestId = () =>
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
