// Small building blocks shared by the views: labelled fields that show the API's
// error for them, a form-level alert, and a hook that runs a submit and sorts its
// errors into "next to a field" and "about the whole form".

import { useEffect, useRef, useState } from "preact/hooks";

import { ApiError, describeError, formField } from "./api.js";

/**
 * A labelled control with an optional hint and error, wired for screen readers
 * (aria-describedby, aria-invalid). `as` is "input", "select" or "textarea".
 */
export function Field({ id, label, error, hint, as: Control = "input", children, class: className, ...control }) {
  const described = [hint && `${id}-hint`, error && `${id}-error`].filter(Boolean).join(" ") || undefined;
  return (
    <div class={`field ${className || ""}`}>
      <label for={id}>{label}</label>
      <Control id={id} name={id.split("-").pop()} aria-describedby={described} aria-invalid={error ? "true" : undefined} {...control}>
        {children}
      </Control>
      {hint && (
        <p class="hint" id={`${id}-hint`}>
          {hint}
        </p>
      )}
      {error && (
        <p class="field-error" id={`${id}-error`}>
          {error}
        </p>
      )}
    </div>
  );
}

/** Seconds left until `until` (ms), ticking each second; 0 when passed. */
function useCountdown(until) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (!until) return undefined;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [until]);
  return until ? Math.max(0, Math.ceil((until - now) / 1000)) : 0;
}

/** An error about a whole form or view; a rate limit counts down to when trying again makes sense. */
export function ErrorMessage({ error, id, onRetry }) {
  const until = error instanceof ApiError && error.retryAfter ? error.at + error.retryAfter * 1000 : 0;
  const left = useCountdown(until);
  if (!error) return null;
  let text = typeof error === "string" ? error : describeError(error);
  if (error instanceof ApiError && error.status === 429) {
    text = left > 0 ? `Too many requests. You can try again in ${left} s.` : "You can try again now.";
  }
  return (
    <div class="alert" role="alert" id={id}>
      <p>{text}</p>
      {onRetry && (
        <button type="button" class="secondary" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

/**
 * Runs `action` on submit: while it runs `busy` is true; an ApiError naming fields in
 * `fieldNames` lands in `errors[field]` (and focus moves to the first such field),
 * anything else in `formError`. What was typed is never cleared on failure.
 */
export function useSubmit(action, fieldNames, formRef) {
  const [busy, setBusy] = useState(false);
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const submit = async (event) => {
    event?.preventDefault();
    if (busy) return undefined;
    setBusy(true);
    setErrors({});
    setFormError(null);
    try {
      return await action();
    } catch (error) {
      handle(error);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  const handle = (error) => {
    if (!(error instanceof ApiError)) {
      setFormError(String(error?.message || error));
      return;
    }
    error.at = Date.now();
    const known = Object.fromEntries(Object.entries(error.fields).filter(([name]) => fieldNames.includes(name)));
    setErrors(known);
    const unknown = error.violations.filter((v) => !(formField(v.field) in known));
    if (!Object.keys(known).length || unknown.length) setFormError(error);
    const first = fieldNames.find((name) => name in known);
    if (first) requestAnimationFrame(() => formRef?.current?.querySelector(`[name="${first}"]`)?.focus());
  };
  return { busy, errors, formError, submit, setFormError, handle };
}

/** Moves focus to the view's heading when the view changes, so keyboard and screen reader users start there. */
export function useFocusHeading(key) {
  const ref = useRef(null);
  useEffect(() => {
    ref.current?.focus();
  }, [key]);
  return ref;
}
