// Sign in with an API key (checked with GET /auth/me), or register a TabPFN token.

import { call, setKey } from "../api.js";
import { field, h } from "../dom.js";
import { errorBox } from "../ui.js";

export function render(main, { query, navigate }) {
  const next = query.get("next") || "/jobs";
  const keyInput = h("input", {
    type: "password", name: "api_key", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "tpa_…",
  });
  const signinErrors = h("div");
  const signinForm = h(
    "form",
    { class: "card", "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title" }, "Sign in with your API key"),
    field("API key", keyInput, "Kept in this tab only (sessionStorage); closing the tab signs you out."),
    signinErrors,
    h("button", { type: "submit" }, "Sign in"),
  );
  signinForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    signinErrors.replaceChildren();
    const key = keyInput.value.trim();
    try {
      await call("GET", "/auth/me", { key });
      setKey(key);
      navigate(next.startsWith("/") ? next : "/jobs");
    } catch (error) {
      signinErrors.append(errorBox(error, "Could not sign in"));
    }
  });

  const tokenInput = h("input", { type: "password", name: "tabpfn_token", autocomplete: "off", required: true });
  const setupErrors = h("div");
  const issued = h("div", { "aria-live": "polite" });
  const registerButton = h("button", { type: "submit", class: "secondary" }, "Register");
  const setupForm = h(
    "form",
    { class: "card", "aria-labelledby": "setup-title" },
    h("h2", { id: "setup-title" }, "No key yet? Register your TabPFN token"),
    h("p", null, "The token is checked with TabPFN, then stored encrypted. You get an API key, shown once."),
    field("TabPFN token", tokenInput),
    setupErrors,
    registerButton,
    issued,
  );
  setupForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    // TabPFN checks the token for seconds: a second click made a second key.
    if (registerButton.disabled) return;
    registerButton.disabled = true;
    setupErrors.replaceChildren();
    issued.replaceChildren();
    try {
      const created = await call("POST", "/auth/setup", { key: "", json: { tabpfn_token: tokenInput.value.trim() } });
      tokenInput.value = "";
      const existing = created.account === "existing";
      issued.append(
        h(
          "div",
          { class: "notice success" },
          h("p", { class: "notice-title" }, existing
            ? "This token already had an account: a new API key was added to it. Copy these now: they are not shown again."
            : "Registered. Copy these now: they are not shown again."),
          existing
            ? h("p", null, "Its jobs and models are there; its earlier keys still work until you revoke them on the Keys page.")
            : null,
          h("dl", { class: "secrets" },
            h("dt", null, "API key"), h("dd", null, h("code", { class: "secret" }, created.api_key)),
            h("dt", null, "Webhook secret"), h("dd", null, h("code", { class: "secret" }, created.webhook_secret)),
          ),
          h("button", {
            type: "button",
            on: { click: () => { setKey(created.api_key); navigate("/jobs"); } },
          }, "Sign in with this key"),
        ),
      );
    } catch (error) {
      setupErrors.append(errorBox(error, "Could not register"));
    } finally {
      registerButton.disabled = false;
    }
  });

  main.append(h("h1", null, "TabPFN API console"), h("div", { class: "grid-2" }, signinForm, setupForm));
  keyInput.focus();
}
