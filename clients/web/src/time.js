// Dates as people enter and read them: in this browser's time zone. The API speaks
// RFC 3339 UTC; conversions happen here only.

// A due date without a time means the end of that day.
const END_OF_DAY = "23:59";

export const timeZone = () => Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

const pad = (n) => String(n).padStart(2, "0");

/** Local midnight of `day` (YYYY-MM-DD) plus `addDays`, as RFC 3339. */
export function localDayStart(day, addDays = 0) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(y, m - 1, d + addDays).toISOString();
}

/** {date: "YYYY-MM-DD", time: "HH:MM" or ""} in local time for an RFC 3339 instant. */
export function toLocalParts(iso) {
  if (!iso) return { date: "", time: "" };
  const at = new Date(iso);
  const date = `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}`;
  const time = `${pad(at.getHours())}:${pad(at.getMinutes())}`;
  return { date, time: time === END_OF_DAY ? "" : time };
}

/** The RFC 3339 instant of a local date and optional time; null without a date. */
export function fromLocalParts(date, time) {
  if (!date) return null;
  const [y, m, d] = date.split("-").map(Number);
  const [hh, mm] = (time || END_OF_DAY).split(":").map(Number);
  return new Date(y, m - 1, d, hh, mm).toISOString();
}

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", year: "numeric" });
const dayTimeFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
  hour: "numeric",
  minute: "2-digit",
});

export function formatDue(iso) {
  const { time } = toLocalParts(iso);
  return (time ? dayTimeFormat : dayFormat).format(new Date(iso));
}

export function formatDate(iso) {
  return iso ? dayFormat.format(new Date(iso)) : "";
}

export const isOverdue = (task) => task.dueTime && task.status !== "COMPLETED" && new Date(task.dueTime) < new Date();
