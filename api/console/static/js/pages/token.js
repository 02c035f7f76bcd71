// TabPFN token: replace the token this account's jobs run with (PUT /auth/tabpfn-token),
// or delete the account (DELETE /auth/me).
// The token goes from a password field into the request body and nowhere else: not
// into storage, a URL or the page. The field is emptied on every try.

import { call } from "../api.js";
import { field, fill, h } from "../dom.js";
import { errorBox, formatTime, loading } from "../ui.js";

// Typed, not clicked through: deleting an account cannot be undone.
const CONFIRM_WORD = "delete";

function deleteAccountForm(signOut) {
  const confirmInput = h("input", {
    type: "text", name: "confirm", autocomplete: "off", spellcheck: "false", required: true,
  });
  const submit = h("button", { type: "submit", class: "danger", disabled: true }, "Delete account");
  const outcome = h("div", { "aria-live": "polite" });
  confirmInput.addEventListener("input", () => {
    submit.disabled = confirmInput.value.trim().toLowerCase() !== CONFIRM_WORD;
  });
  const form = h(
    "form",
    { class: "card token-form", "aria-labelledby": "delete-title" },
    h("h2", { id: "delete-title" }, "Delete your account"),
    h("p", null, "At once and for good: every API key (this console's too), the stored TabPFN token, ",
      "every job with its data and result, every model. Unfinished jobs stop. The models' copies in your ",
      "TabPFN account are deleted too. Your token can set up a new, empty account afterwards."),
    field(`Type "${CONFIRM_WORD}" to confirm`, confirmInput),
    submit,
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return;
    submit.disabled = true;
    fill(outcome, loading("Deleting your account…"));
    try {
      // No signal: once sent, the deletion's answer is awaited even if the page changes.
      const response = await call("DELETE", "/auth/me", { as: "response" });
      const leftUpstream = response.headers.get("Upstream-Deleted") === "false";
      signOut(h(
        "div",
        { class: "notice success", role: "status" },
        h("p", { class: "notice-title" }, "Account deleted"),
        h("p", null, "Everything the service held for it is gone; its API keys no longer work."),
        leftUpstream
          ? h("p", null, "Some models' copies could not be deleted in your TabPFN account: delete them there.")
          : null,
      ));
    } catch (error) {
      fill(outcome, errorBox(error, "Not deleted"));
      submit.disabled = false;
    }
  });
  return form;
}

export function render(main, { signal, signOut }) {
  const tokenInput = h("input", {
    type: "password", name: "tabpfn_token", autocomplete: "off", spellcheck: "false", required: true,
  });
  const submit = h("button", { type: "submit" }, "Replace token");
  const outcome = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card token-form", "aria-labelledby": "token-title" },
    h("h2", { id: "token-title" }, "Replace your TabPFN token"),
    field("New TabPFN token", tokenInput, "Checked with TabPFN before it is stored, encrypted. It is never shown again."),
    submit,
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    tokenInput.value = "";
    submit.disabled = true;
    fill(outcome, loading("Checking the token with TabPFN…"));
    try {
      await call("PUT", "/auth/tabpfn-token", { json: { tabpfn_token: token }, signal });
      fill(outcome, h(
        "div",
        { class: "notice success", role: "status" },
        h("p", { class: "notice-title" }, "Token replaced"),
        h("p", null, `TabPFN accepted it (${formatTime(new Date().toISOString())}). Jobs that start from now on use it; `,
          "jobs that already failed are not rerun: submit them again."),
        h("p", null, h("a", { href: "#/jobs" }, "Back to your jobs")),
      ));
    } catch (error) {
      if (signal.aborted) return;
      fill(outcome, errorBox(error, "Not replaced: your stored token is unchanged"));
      tokenInput.focus();
    } finally {
      submit.disabled = false;
    }
  });

  main.append(
    h("h1", null, "TabPFN token"),
    h("p", null, "Your jobs call TabPFN with the token stored for your account. When TabPFN stops accepting it ",
      "(it expired, or you rotated it at Prior Labs), jobs fail with ", h("code", null, "upstream_auth_failed"),
      ". Replace it here: your account, API keys, models and jobs stay."),
    form,
    deleteAccountForm(signOut),
  );
}
