// The caller's labels (`metadata`) on a job or a model: listed, and changed with
// PATCH as a JSON Merge Patch (a key given text is set, a key given null removed).

import { call } from "./api.js";
import { h } from "./dom.js";
import { errorBox } from "./ui.js";

/**
 * An editor of the labels of the job or model at `path` ("/jobs/<id>"), showing
 * `labels`; `onSaved` gets the updated job or model after each change.
 */
export function labelEditor(path, labels, { signal, onSaved } = {}) {
  const box = h("div", { class: "labels" });
  const errors = h("div");

  // One change at a time: every button waits for the answer, so the labels shown are
  // the last answer's, never an earlier one that arrived late.
  const setBusy = (busy) => {
    for (const button of box.querySelectorAll("button")) button.disabled = busy;
  };
  const save = async (patch) => {
    errors.replaceChildren();
    setBusy(true);
    try {
      const updated = await call("PATCH", path, { json: { metadata: patch }, signal });
      draw(updated.metadata);
      onSaved?.(updated);
    } catch (error) {
      if (error?.name !== "AbortError") errors.replaceChildren(errorBox(error, "Could not change the labels"));
      setBusy(false);
    }
  };

  const draw = (current) => {
    const entries = Object.entries(current ?? {});
    const list = entries.length
      ? h("ul", { class: "job-metadata" }, entries.map(([key, value]) => {
        const remove = h("button", { type: "button", class: "link", "aria-label": `Remove label ${key}` }, "Remove");
        remove.addEventListener("click", () => save({ [key]: null }));
        return h("li", null, h("code", null, key), " ", value, " ", remove);
      }))
      : h("p", { class: "muted" }, "No labels.");
    const key = h("input", {
      name: "label-key", placeholder: "key", size: 14, required: true, maxlength: 64,
      pattern: "[A-Za-z0-9_.\\-]+", title: "letters, digits, _, - or .", "aria-label": "Label key",
    });
    const value = h("input", { name: "label-value", placeholder: "value", size: 22, maxlength: 512, "aria-label": "Label value" });
    const submit = h("button", { type: "submit", class: "secondary" }, "Set label");
    const form = h("form", { class: "label-form" }, key, " ", value, " ", submit);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      save({ [key.value.trim()]: value.value });
    });
    box.replaceChildren(list, form, errors);
  };

  draw(labels);
  return box;
}
