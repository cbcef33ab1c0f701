// The signed-in person's own account: their name, and their password.

import { useRef, useState } from "preact/hooks";

import { ApiError } from "../api.js";
import { ROLE_LABELS } from "../labels.js";
import { formatDate } from "../time.js";
import { ErrorMessage, Field, useFocusHeading, useSubmit } from "../ui.jsx";

export function AccountView({ api, user, onUser }) {
  const heading = useFocusHeading("account");
  return (
    <>
      <div class="view-head">
        <h1 ref={heading} tabIndex={-1}>
          Account
        </h1>
      </div>
      <div class="cards">
        <ProfileForm api={api} user={user} onUser={onUser} />
        <PasswordForm api={api} user={user} />
      </div>
    </>
  );
}

function ProfileForm({ api, user, onUser }) {
  const form = useRef(null);
  const [name, setName] = useState(user.name || "");
  const [saved, setSaved] = useState("");
  const { busy, errors, formError, submit } = useSubmit(
    async () => {
      setSaved("");
      onUser(await api.updateMe({ name: name.trim() }));
      setSaved("Profile saved.");
    },
    ["name"],
    form,
  );
  return (
    <section class="card" aria-labelledby="profile-heading">
      <h2 id="profile-heading">Profile</h2>
      <dl class="facts">
        <dt>Email</dt>
        <dd id="profile-email">{user.email}</dd>
        <dt>Role</dt>
        <dd>{ROLE_LABELS[user.role] || user.role}</dd>
        <dt>Member since</dt>
        <dd>{formatDate(user.createTime)}</dd>
      </dl>
      <form id="profile-form" ref={form} onSubmit={submit} noValidate>
        <Field id="profile-name" label="Name" name="name" autocomplete="name" value={name}
          onInput={(e) => setName(e.currentTarget.value)} error={errors.name} />
        <ErrorMessage error={formError} id="profile-error" />
        <p class="success" role="status">
          {saved}
        </p>
        <button type="submit" disabled={busy}>
          Save profile
        </button>
      </form>
    </section>
  );
}

function PasswordForm({ api, user }) {
  const form = useRef(null);
  const empty = { currentPassword: "", newPassword: "", confirmPassword: "" };
  const [fields, setFields] = useState(empty);
  const [saved, setSaved] = useState("");
  const set = (name) => (e) => setFields({ ...fields, [name]: e.currentTarget.value });
  const { busy, errors, formError, submit } = useSubmit(
    async () => {
      setSaved("");
      if (fields.newPassword !== fields.confirmPassword) {
        throw fieldError("confirmPassword", "does not match the new password");
      }
      await api.changePassword({ currentPassword: fields.currentPassword, newPassword: fields.newPassword });
      setFields(empty);
      setSaved("Password changed. You stay signed in here; your other sessions were signed out.");
    },
    ["currentPassword", "newPassword", "confirmPassword"],
    form,
  );
  return (
    <section class="card" aria-labelledby="password-heading">
      <h2 id="password-heading">Change password</h2>
      <form id="password-form" ref={form} onSubmit={submit} noValidate>
        <input type="text" name="username" autocomplete="username" hidden value={user.email} readOnly />
        <Field id="pw-currentPassword" label="Current password" type="password" autocomplete="current-password"
          value={fields.currentPassword} onInput={set("currentPassword")} error={errors.currentPassword} />
        <Field id="pw-newPassword" label="New password" type="password" autocomplete="new-password"
          hint="8 to 72 characters." value={fields.newPassword} onInput={set("newPassword")}
          error={errors.newPassword} />
        <Field id="pw-confirmPassword" label="Repeat the new password" type="password" autocomplete="new-password"
          value={fields.confirmPassword} onInput={set("confirmPassword")} error={errors.confirmPassword} />
        <ErrorMessage error={formError} id="password-error" />
        <p class="success" role="status">
          {saved}
        </p>
        <button type="submit" disabled={busy}>
          Change password
        </button>
      </form>
    </section>
  );
}

/** A check made here, reported exactly like the API's BadRequest so it shows the same way. */
function fieldError(field, description) {
  return new ApiError({
    status: 400,
    body: {
      message: description,
      details: [{ "@type": "type.googleapis.com/google.rpc.BadRequest", fieldViolations: [{ field, description }] }],
    },
  });
}
