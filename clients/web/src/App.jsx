// The shell: signed out it shows the sign-in page; signed in, a header with the views
// (tasks, account, admin for admins) and a polite live region for short notices.

import { useCallback, useEffect, useRef, useState } from "preact/hooks";

import { ENDED } from "./api.js";
import { Notices } from "./notices.js";
import { readRoute, routeSearch } from "./route.js";
import { AccountView } from "./views/AccountView.jsx";
import { AdminView } from "./views/AdminView.jsx";
import { AuthView } from "./views/AuthView.jsx";
import { TasksView } from "./views/TasksView.jsx";

const MAX_NOTICES = 3;

export function App({ api }) {
  const [session, setSession] = useState(() => api.session.get());
  const [ended, setEnded] = useState(null);
  const [route, setRoute] = useState(readRoute);

  useEffect(() => {
    api.onEnded = (reason) => {
      setEnded(reason);
      setSession(null);
    };
    // Another tab refreshed (new tokens), changed the user, or signed out.
    const unwatch = api.session.watch((next) => {
      setSession((previous) => {
        if (previous && !next) setEnded(api.session.endedReason());
        return next;
      });
    });
    const onPop = () => setRoute(readRoute());
    window.addEventListener("popstate", onPop);
    return () => {
      unwatch();
      window.removeEventListener("popstate", onPop);
    };
  }, [api]);

  const navigate = useCallback((changes, { replace = false } = {}) => {
    setRoute((current) => {
      const next = { ...current, ...changes };
      const url = routeSearch(next);
      if (url !== window.location.search) window.history[replace ? "replaceState" : "pushState"](null, "", url);
      return next;
    });
  }, []);

  const [notices, setNotices] = useState([]);
  const open = useRef(new Set());
  const notify = useCallback((notice) => {
    const id = Math.random().toString(36).slice(2);
    open.current.add(id);
    const close = (how = "closed") => {
      if (!open.current.delete(id)) return;
      clearTimeout(timer);
      setNotices((all) => all.filter((n) => n.id !== id));
      notice.onClose?.(how);
    };
    const timer = setTimeout(() => close("timeout"), notice.timeout || 6000);
    setNotices((all) => {
      // A few at a time: the oldest make way (an undo that makes way is final).
      for (const old of all.slice(0, -(MAX_NOTICES - 1))) setTimeout(() => old.close("replaced"));
      return [...all, { ...notice, id, close }];
    });
    return close;
  }, []);

  if (!session) {
    return (
      <Notices.Provider value={notify}>
        <AuthView
          api={api}
          ended={ended && ENDED[ended]}
          onSignedIn={(next) => {
            setEnded(null);
            setSession(next);
          }}
        />
      </Notices.Provider>
    );
  }

  const user = session.user || {};
  const isAdmin = user.role === "ADMIN";
  const view = route.view === "admin" && !isAdmin ? "tasks" : route.view;
  return (
    <Notices.Provider value={notify}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <span class="brand">Task API</span>
        <nav aria-label="Main">
          <ul>
            <NavLink view="tasks" route={{ ...route, view }} navigate={navigate}>
              Tasks
            </NavLink>
            <NavLink view="account" route={{ ...route, view }} navigate={navigate}>
              Account
            </NavLink>
            {isAdmin && (
              <NavLink view="admin" route={{ ...route, view }} navigate={navigate}>
                Admin
              </NavLink>
            )}
          </ul>
        </nav>
        <div class="whoami">
          <span id="whoami" title={user.email}>
            {user.name || user.email}
          </span>
          <button type="button" class="secondary" id="sign-out" onClick={() => api.logout().then(() => setSession(null))}>
            Sign out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {view === "tasks" && <TasksView api={api} route={route} navigate={navigate} />}
        {view === "account" && (
          <AccountView
            api={api}
            user={user}
            onUser={(next) => {
              api.session.setUser(next);
              setSession(api.session.get());
            }}
          />
        )}
        {view === "admin" && <AdminView api={api} self={user} />}
      </main>
      <NoticeList notices={notices} />
    </Notices.Provider>
  );
}

function NavLink({ view, route, navigate, children }) {
  return (
    <li>
      <a
        href={routeSearch({ ...route, view })}
        aria-current={view === route.view ? "page" : undefined}
        onClick={(event) => {
          event.preventDefault();
          navigate({ view });
        }}
      >
        {children}
      </a>
    </li>
  );
}

function NoticeList({ notices }) {
  return (
    <div class="notices" role="status" aria-live="polite">
      {notices.map((notice) => (
        <Notice key={notice.id} notice={notice} />
      ))}
    </div>
  );
}

function Notice({ notice }) {
  const actionRef = useRef(null);
  useEffect(() => {
    if (notice.focus) actionRef.current?.focus();
  }, [notice]);
  return (
    <div class="notice">
      <p>{notice.text}</p>
      {notice.action && (
        <button
          type="button"
          ref={actionRef}
          onClick={() => {
            notice.action.run();
            notice.close("action");
          }}
        >
          {notice.action.label}
        </button>
      )}
      <button type="button" class="icon" aria-label="Dismiss" onClick={() => notice.close("dismissed")}>
        ×
      </button>
    </div>
  );
}
