// Sign in or create an account. The API's own validation messages appear next to the
// field they name; a session that ended by itself says why at the top.

import { useRef, useState } from "preact/hooks";

import { ErrorMessage, Field, useFocusHeading, useSubmit } from "../ui.jsx";

export function AuthView({ api, ended, onSignedIn }) {
  const [mode, setMode] = useState("signin");
  const heading = useFocusHeading(mode);
  return (
    <main id="main" class="auth">
      <div class="card auth-card">
        <p class="brand">Task API</p>
        <h1 ref={heading} tabIndex={-1}>
          {mode === "signin" ? "Sign in" : "Create your account"}
        </h1>
        {ended && (
          <div class="alert" role="alert" id="session-ended">
            <p>{ended}</p>
          </div>
        )}
        {mode === "signin" ? (
          <SignInForm api={api} onSignedIn={onSignedIn} />
        ) : (
          <SignUpForm api={api} onSignedIn={onSignedIn} />
        )}
        <p class="switch">
          {mode === "signin" ? "New to Task API? " : "Already have an account? "}
          <button type="button" class="link" id="switch-mode" onClick={() => setMode(mode === "signin" ? "signup" : "signin")}>
            {mode === "signin" ? "Create an account" : "Sign in"}
          </button>
        </p>
      </div>
    </main>
  );
}

function SignInForm({ api, onSignedIn }) {
  const form = useRef(null);
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const { busy, errors, formError, submit } = useSubmit(
    async () => onSignedIn(await api.login({ email, password })),
    ["email", "password"],
    form,
  );
  return (
    <form id="signin-form" ref={form} onSubmit={submit} noValidate>
      <Field id="signin-email" label="Email" type="email" autocomplete="username" required value={email}
        onInput={(e) => setEmail(e.currentTarget.value)} error={errors.email} />
      <Field id="signin-password" label="Password" type="password" autocomplete="current-password" required
        value={password} onInput={(e) => setPassword(e.currentTarget.value)} error={errors.password} />
      <ErrorMessage error={formError} id="signin-error" />
      <button type="submit" disabled={busy}>
        {busy ? "Signing in…" : "Sign in"}
      </button>
    </form>
  );
}

function SignUpForm({ api, onSignedIn }) {
  const form = useRef(null);
  const [fields, setFields] = useState({ name: "", email: "", password: "" });
  const set = (name) => (e) => setFields({ ...fields, [name]: e.currentTarget.value });
  const { busy, errors, formError, submit } = useSubmit(
    async () => onSignedIn(await api.register(fields)),
    ["name", "email", "password"],
    form,
  );
  return (
    <form id="signup-form" ref={form} onSubmit={submit} noValidate>
      <Field id="signup-name" label="Name" autocomplete="name" required value={fields.name} onInput={set("name")}
        error={errors.name} />
      <Field id="signup-email" label="Email" type="email" autocomplete="email" required value={fields.email}
        onInput={set("email")} error={errors.email} />
      <Field id="signup-password" label="Password" type="password" autocomplete="new-password" required
        hint="8 to 72 characters." value={fields.password} onInput={set("password")} error={errors.password} />
      <ErrorMessage error={formError} id="signup-error" />
      <button type="submit" disabled={busy}>
        {busy ? "Creating account…" : "Create account"}
      </button>
    </form>
  );
}
