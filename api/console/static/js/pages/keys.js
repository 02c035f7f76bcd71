// Keys: the caller's API keys; create one (shown once, optionally named) and revoke one
// (at once).

import { call, setKey } from "../api.js";
import { field, h } from "../dom.js";
import { actionButton, badge, errorBox, formatTime, loading } from "../ui.js";

export async function render(main, { signal, navigate }) {
  const errors = h("div");
  const created = h("div", { "aria-live": "polite" });
  const body = h("div", null, loading());

  const load = async () => {
    const [me, keys] = await Promise.all([
      call("GET", "/auth/me", { signal }),
      call("GET", "/auth/keys", { signal }),
    ]);
    const rows = keys.map((key) => {
      const current = key.id === me.key_id;
      const revoke = key.revoked_at ? "" : actionButton("Revoke", async () => {
        const warning = current ? " This is the key this console is signed in with: you will be signed out." : "";
        if (!window.confirm(`Revoke key ${key.id}? Requests with it are refused at once.${warning}`)) return;
        created.replaceChildren();
        await call("DELETE", `/auth/keys/${encodeURIComponent(key.id)}`);
        await load(); // with the console's own key revoked, this is refused and signs out
      }, { errors, kind: "danger", attrs: { "aria-label": `Revoke key ${key.id}` } });
      return h("tr", { dataset: { keyId: key.id } },
        h("td", null, h("code", null, key.id), current ? h("span", { class: "muted" }, " (this console)") : null),
        h("td", null, key.name ?? h("span", { class: "muted" }, "—")),
        h("td", null, key.revoked_at ? badge("revoked") : badge("active")),
        h("td", null, formatTime(key.created_at)),
        h("td", null, formatTime(key.last_used_at)),
        h("td", null, key.revoked_at ? formatTime(key.revoked_at) : revoke));
    });
    body.replaceChildren(h("div", { class: "table-wrap" }, h("table", { class: "keys-table" },
      h("caption", { class: "visually-hidden" }, "Your API keys"),
      h("thead", null, h("tr", null, ["Key id", "Name", "State", "Created", "Last used", "Revoked"].map((n) => h("th", { scope: "col" }, n)))),
      h("tbody", null, rows))));
  };

  const nameInput = h("input", {
    type: "text", name: "key_name", maxlength: "100", autocomplete: "off", spellcheck: "false",
  });
  const create = actionButton("Create a key", async () => {
    const name = nameInput.value.trim();
    const key = await call("POST", "/auth/keys", { json: name ? { name } : {}, signal });
    nameInput.value = "";
    created.replaceChildren(h(
      "div",
      { class: "notice success" },
      h("p", { class: "notice-title" }, "New API key. Copy it now: it is not shown again."),
      h("p", null, h("code", { class: "secret new-key" }, key.api_key)),
      h("p", { class: "muted" }, `Key id ${key.key_id}${key.name ? ` (${key.name})` : ""}`),
      h("button", {
        type: "button", class: "secondary",
        on: { click: () => { setKey(key.api_key); created.replaceChildren(); navigate("/keys"); } },
      }, "Use it in this console"),
    ));
    await load();
  }, { errors });

  main.append(
    h("h1", null, "API keys"),
    h("p", null, "Keys are stored only as hashes: a key is shown once, when it is created. Revoking one takes effect at once."),
    h("div", { class: "card key-form" },
      field("Name (optional)", nameInput, "To tell your keys apart, e.g. the pipeline that will use it."),
      create),
    created, errors, body,
  );
  try {
    await load();
  } catch (error) {
    if (!signal.aborted) body.replaceChildren(errorBox(error, "Could not list keys"));
  }
}
