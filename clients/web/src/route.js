// The view and the task filters live in the URL, so a view can be bookmarked, shared
// and reached again with Back/Forward. `api` (where the API is) is kept as given.

import { localDayStart } from "./time.js";

export const SORTS = {
  newest: { label: "Newest first", orderBy: "createTime desc" },
  oldest: { label: "Oldest first", orderBy: "createTime" },
  due: { label: "Due soonest", orderBy: "dueTime" },
  "due-desc": { label: "Due latest", orderBy: "dueTime desc" },
  priority: { label: "Highest priority", orderBy: "priority desc, dueTime" },
  updated: { label: "Recently changed", orderBy: "updateTime desc" },
  title: { label: "Title A–Z", orderBy: "title" },
};
export const DEFAULT_SORT = "newest";
export const VIEWS = ["tasks", "account", "admin"];

const STATUSES = ["PENDING", "IN_PROGRESS", "COMPLETED"];
const PRIORITIES = ["LOW", "MEDIUM", "HIGH"];
const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** The route in `search` (location.search), with anything unknown or malformed dropped. */
export function readRoute(search = window.location.search) {
  const params = new URLSearchParams(search);
  const pick = (name, allowed) => (allowed.includes(params.get(name)) ? params.get(name) : "");
  const day = (name) => (DAY.test(params.get(name) || "") ? params.get(name) : "");
  return {
    view: pick("view", VIEWS) || "tasks",
    status: pick("status", STATUSES),
    priority: pick("priority", PRIORITIES),
    tags: params.getAll("tag").filter(Boolean),
    dueFrom: day("due_from"),
    dueTo: day("due_to"),
    q: params.get("q") || "",
    sort: pick("sort", Object.keys(SORTS)) || DEFAULT_SORT,
  };
}

export function routeSearch(route, current = window.location.search) {
  const params = new URLSearchParams();
  const api = new URLSearchParams(current).get("api");
  if (api) params.set("api", api);
  if (route.view !== "tasks") params.set("view", route.view);
  if (route.view === "tasks") {
    if (route.status) params.set("status", route.status);
    if (route.priority) params.set("priority", route.priority);
    for (const tag of route.tags) params.append("tag", tag);
    if (route.dueFrom) params.set("due_from", route.dueFrom);
    if (route.dueTo) params.set("due_to", route.dueTo);
    if (route.q) params.set("q", route.q);
    if (route.sort !== DEFAULT_SORT) params.set("sort", route.sort);
  }
  const text = params.toString();
  return text ? `?${text}` : window.location.pathname;
}

/** ListTasks query parameters for the route's filters. Due dates are whole local days. */
export function listQuery(route) {
  const query = { orderBy: SORTS[route.sort].orderBy };
  if (route.status) query.status = route.status;
  if (route.priority) query.priority = route.priority;
  if (route.tags.length) query.tag = route.tags;
  if (route.q) query.q = route.q;
  if (route.dueFrom) query.dueAfter = localDayStart(route.dueFrom, 0);
  if (route.dueTo) query.dueBefore = localDayStart(route.dueTo, 1); // dueBefore is exclusive
  return query;
}

export function hasFilters(route) {
  return Boolean(route.status || route.priority || route.tags.length || route.dueFrom || route.dueTo || route.q);
}
