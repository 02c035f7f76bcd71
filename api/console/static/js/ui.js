// Small pieces every page uses: errors with their code, status badges, times.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

/** An error box: the API's message and its stable code, as text. */
export function errorBox(error, title = "The request failed") {
  const code = error instanceof ApiError ? error.code : "client_error";
  const message = error instanceof ApiError ? error.message : String(error?.message ?? error);
  const details = error instanceof ApiError && Array.isArray(error.extra?.errors)
    ? h("ul", { class: "error-list" }, error.extra.errors.map((e) => h("li", null, `${e.loc}: ${e.message}`)))
    : null;
  return h(
    "div",
    { class: "notice error", role: "alert" },
    h("p", { class: "notice-title" }, title),
    h("p", null, h("span", { class: "error-message" }, message), " ", h("code", { class: "error-code" }, code)),
    details,
  );
}

/**
 * Where to go when TabPFN rejected the token stored with the account (a job's
 * upstream_auth_failed, or /usage's): the TabPFN token page. Null for other codes.
 */
export function replaceTokenHint(code) {
  if (code !== "upstream_auth_failed") return null;
  return h("p", null, h("a", { href: "#/token" }, "Replace your TabPFN token"),
    " (your account, keys and models stay), then try again.");
}

export function notice(text, kind = "info") {
  return h("div", { class: `notice ${kind}`, role: "status" }, text);
}

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, status);
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, text);
}

export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
    // In the browser's zone, named: a time a teammate elsewhere reads is not theirs.
    timeZoneName: "short",
  });
}

/** "1.2 s", "3 min 4 s", "2 h 5 min". */
export function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  if (seconds < 0) seconds = 0;
  if (seconds < 10) return `${seconds.toFixed(seconds < 1 ? 2 : 1)} s`;
  // Rounded once, first: 119.6 s read "1 min 60 s".
  const whole = Math.round(seconds);
  if (whole < 60) return `${whole} s`;
  const minutes = Math.floor(whole / 60);
  if (minutes < 60) return `${minutes} min ${whole % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function between(startIso, endIso) {
  if (!startIso) return null;
  const end = endIso ? new Date(endIso) : new Date();
  return (end - new Date(startIso)) / 1000;
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

// What each waiting reason means to a person; unknown reasons are shown as sent.
const WAITING_REASONS = {
  upstream_rate_limit: "TabPFN's rate limit for your token is used up for now; the job starts when the window reopens.",
  fair_share: "Your other jobs are using your share of running jobs; this one starts when one ends.",
  retry_backoff: "A transient TabPFN error happened; the job is waiting before it retries.",
  capacity: "Every worker slot is busy, or other users' jobs are taking their turn; the job starts when a slot is free.",
};

/** A sentence for a Job's `waiting` field, or null when it is not waiting. */
export function waitingText(waiting) {
  if (!waiting || typeof waiting !== "object") return null;
  const reason = String(waiting.reason ?? "unknown");
  const sentence = WAITING_REASONS[reason] ?? `Waiting: ${reason}.`;
  const until = waiting.until ? ` Expected until ${formatTime(waiting.until)}.` : "";
  return { reason, text: sentence + until };
}

/** A button that runs an async action, disabled while it runs; errors go to `errors`. */
export function actionButton(label, action, { errors, kind = "", attrs = {} } = {}) {
  const button = h("button", { type: "button", class: kind, ...attrs }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    errors?.replaceChildren();
    try {
      await action(button);
    } catch (error) {
      if (error?.name === "AbortError") return;
      if (errors) errors.replaceChildren(errorBox(error));
      else throw error;
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
