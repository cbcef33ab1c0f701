// Admins only: every account, searchable and paged, with role changes and
// disabling (a disabled account's sessions stop working at once).

import { useEffect, useRef, useState } from "preact/hooks";

import { describeError } from "../api.js";
import { useNotify } from "../notices.js";
import { ROLE_LABELS, plural } from "../labels.js";
import { formatDate } from "../time.js";
import { ErrorMessage, Field, useFocusHeading } from "../ui.jsx";

const PAGE_SIZE = 20;

export function AdminView({ api, self }) {
  const notify = useNotify();
  const heading = useFocusHeading("admin");
  const [q, setQ] = useState("");
  const [search, setSearch] = useState({ q: "", role: "" });
  const [tokens, setTokens] = useState([""]);
  const [page, setPage] = useState({ users: [], totalSize: 0, nextPageToken: "" });
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState(null);
  const [reloads, setReloads] = useState(0);
  const sequence = useRef(0);
  const pageToken = tokens[tokens.length - 1];

  useEffect(() => {
    const timer = setTimeout(() => {
      if (q.trim() === search.q) return;
      setSearch((current) => ({ ...current, q: q.trim() }));
      setTokens([""]);
    }, 300);
    return () => clearTimeout(timer);
  }, [q]);

  useEffect(() => {
    const mine = ++sequence.current;
    setLoading(true);
    api
      .listUsers({ pageSize: PAGE_SIZE, pageToken, q: search.q, role: search.role })
      .then((result) => {
        if (mine !== sequence.current) return;
        setPage({ users: result.users || [], totalSize: result.totalSize || 0, nextPageToken: result.nextPageToken || "" });
        setError(null);
      })
      .catch((failure) => {
        if (mine !== sequence.current) return;
        failure.at = Date.now();
        setError(failure);
      })
      .finally(() => mine === sequence.current && setLoading(false));
  }, [api, search, pageToken, reloads]);

  const change = async (user, fields, done) => {
    setPage((current) => ({ ...current, users: current.users.map((u) => (u.id === user.id ? { ...u, ...fields } : u)) }));
    try {
      const saved = await api.updateUser(user.id, fields);
      setPage((current) => ({ ...current, users: current.users.map((u) => (u.id === user.id ? saved : u)) }));
      notify({ text: done(saved) });
    } catch (failure) {
      setPage((current) => ({ ...current, users: current.users.map((u) => (u.id === user.id ? user : u)) }));
      notify({ text: `${user.email} was not changed. ${describeError(failure)}` });
    }
  };

  return (
    <>
      <div class="view-head">
        <h1 ref={heading} tabIndex={-1}>
          Users
        </h1>
      </div>
      <form class="filters admin-filters" role="search" aria-label="Find users" onSubmit={(e) => e.preventDefault()}>
        <Field id="users-q" label="Search" type="search" placeholder="Name or email" value={q}
          onInput={(e) => setQ(e.currentTarget.value)} />
        <Field id="users-role" label="Role" as="select" value={search.role} onChange={(e) => {
          const role = e.currentTarget.value;
          setSearch((current) => ({ ...current, role }));
          setTokens([""]);
        }}>
          <option value="">Any role</option>
          {Object.entries(ROLE_LABELS).map(([value, label]) => (
            <option value={value}>{label}</option>
          ))}
        </Field>
      </form>
      <ErrorMessage error={error} id="users-error" onRetry={() => setReloads((n) => n + 1)} />
      <p class="count" id="users-count" aria-live="polite">
        {loading && !page.users.length ? "Loading…" : plural(page.totalSize, "user")}
      </p>
      <div class="table-wrap">
        <table class="users" id="users">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Email</th>
              <th scope="col">Role</th>
              <th scope="col">Access</th>
              <th scope="col">Joined</th>
            </tr>
          </thead>
          <tbody>
            {page.users.map((user) => {
              const me = user.id === self.id;
              return (
                <tr key={user.id} data-email={user.email} class={user.disabled ? "disabled" : ""}>
                  <td data-label="Name">
                    {user.name}
                    {me && " (you)"}
                  </td>
                  <td data-label="Email">{user.email}</td>
                  <td data-label="Role">
                    <label class="sr-only" for={`role-${user.id}`}>
                      Role of {user.email}
                    </label>
                    <select
                      id={`role-${user.id}`}
                      class="role"
                      value={user.role}
                      disabled={me}
                      onChange={(e) =>
                        change(user, { role: e.currentTarget.value }, (saved) => `${saved.email} is now ${ROLE_LABELS[saved.role]}.`)
                      }
                    >
                      {Object.entries(ROLE_LABELS).map(([value, label]) => (
                        <option value={value}>{label}</option>
                      ))}
                    </select>
                  </td>
                  <td data-label="Access">
                    <div class="access">
                      <span class={user.disabled ? "badge status-disabled" : "badge status-active"}>
                        {user.disabled ? "Disabled" : "Active"}
                      </span>
                      {!me && (
                        <button
                          type="button"
                          class="secondary toggle-disabled"
                          onClick={() =>
                            change(user, { disabled: !user.disabled }, (saved) =>
                              saved.disabled ? `Disabled ${saved.email}; their sessions have ended.` : `Enabled ${saved.email}.`,
                            )
                          }
                        >
                          {user.disabled ? "Enable" : "Disable"}
                          <span class="sr-only"> {user.email}</span>
                        </button>
                      )}
                    </div>
                  </td>
                  <td data-label="Joined">{formatDate(user.createTime)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {(tokens.length > 1 || page.nextPageToken) && (
        <nav class="pager" aria-label="User pages">
          <button type="button" class="secondary" disabled={tokens.length === 1} onClick={() => setTokens(tokens.slice(0, -1))}>
            Previous
          </button>
          <span>Page {tokens.length}</span>
          <button type="button" class="secondary" disabled={!page.nextPageToken}
            onClick={() => setTokens([...tokens, page.nextPageToken])}>
            Next
          </button>
        </nav>
      )}
    </>
  );
}
