// The signed-in session, shared by every tab of this API in localStorage: tabs see one
// another's refreshes (so none presents a rotated refresh token) and sign-outs.
//
// Stored: {accessToken, refreshToken, expiresAt and refreshAt (ms, this browser's clock), user}.
// A script injected into the page could read it; the page loads no third-party code
// and its Content-Security-Policy allows scripts from its own origin only.

const EARLY_MS = 5000;

export class Session {
  constructor(base) {
    this.key = `taskapi.session:${base}`;
  }

  get() {
    try {
      return JSON.parse(localStorage.getItem(this.key) || "null");
    } catch {
      return null;
    }
  }

  /** Stores an AuthSession from Register, Login or Refresh; returns what was stored. */
  start(auth) {
    const lifetime = Number(auth.expiresIn || 0) * 1000;
    const session = {
      accessToken: auth.accessToken,
      refreshToken: auth.refreshToken,
      expiresAt: Date.now() + lifetime,
      // Refresh a little early, so no call leaves with a token about to die in transit.
      refreshAt: Date.now() + lifetime - Math.min(EARLY_MS, lifetime / 5),
      user: auth.user,
    };
    localStorage.setItem(this.key, JSON.stringify(session));
    localStorage.removeItem(`${this.key}:ended`);
    return session;
  }

  setUser(user) {
    const current = this.get();
    if (current) localStorage.setItem(this.key, JSON.stringify({ ...current, user }));
  }

  /** Forgets the session; `reason` (a key of api.ENDED) is what other tabs will tell their user. */
  clear(reason = "elsewhere") {
    localStorage.setItem(`${this.key}:ended`, reason);
    localStorage.removeItem(this.key);
  }

  endedReason() {
    return localStorage.getItem(`${this.key}:ended`) || "elsewhere";
  }

  /** Calls `listener(session or null)` when another tab changes the session. */
  watch(listener) {
    const onStorage = (event) => {
      if (event.key === this.key) listener(this.get());
    };
    window.addEventListener("storage", onStorage);
    return () => window.removeEventListener("storage", onStorage);
  }
}
