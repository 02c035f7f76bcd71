// Models: the caller's fitted models, their columns and classes, and deleting one.

import { call } from "../api.js";
import { field, h } from "../dom.js";
import { labelEditor } from "../labels.js";
import { actionButton, errorBox, formatTime, loading, shortId } from "../ui.js";

const PAGE = 100;

function labelsText(labels) {
  const entries = Object.entries(labels ?? {});
  return entries.length ? ` · ${entries.map(([k, v]) => `${k}: ${v}`).join(", ")}` : "";
}

function modelCard(model, reload, open, signal) {
  const errors = h("div");
  const remove = actionButton("Delete model", async () => {
    if (!window.confirm(`Delete model ${model.id}? Predictions with it will fail afterwards.`)) return;
    await call("DELETE", `/models/${model.id}`);
    await reload();
  }, { errors, kind: "danger" });
  const described = h("span", { class: "model-labels" }, labelsText(model.metadata));
  return h(
    "details",
    { class: "model card", open, id: `model-${model.id}` },
    h("summary", null, h("code", null, shortId(model.id)), ` ${model.task}, ${model.n_rows} rows × ${model.n_features} features, ${formatTime(model.created_at)}`, described),
    h("dl", { class: "summary" },
      h("dt", null, "Model id"), h("dd", null, h("code", null, model.id)),
      h("dt", null, "Task"), h("dd", null, model.task),
      h("dt", null, "Columns"), h("dd", null, h("ul", { class: "inline-list" }, model.columns.map((c) => h("li", null, c)))),
      model.classes ? [h("dt", null, "Classes"), h("dd", null, h("ul", { class: "inline-list" }, model.classes.map((c) => h("li", null, String(c)))))] : null,
      h("dt", null, "Options"), h("dd", null, h("code", null, JSON.stringify(model.options))),
      h("dt", null, "Fitted by"), h("dd", null, h("a", { href: `#/jobs/${model.fit_job_id}` }, "job ", h("code", null, shortId(model.fit_job_id)))),
      // Your labels (`metadata`): the fit job's to start with, then its own.
      h("dt", null, "Metadata"), h("dd", null, labelEditor(`/models/${model.id}`, model.metadata, {
        signal, onSaved: (updated) => { described.textContent = labelsText(updated.metadata); },
      })),
    ),
    h("div", { class: "actions" }, remove),
    errors,
  );
}

/** A page of models, and the query of the next one (from the `Link` header) or null. */
async function modelsPage(query, signal) {
  const response = await call("GET", `/models?${query}`, { signal, as: "response" });
  const next = /<[^>?]*\?([^>]*)>;\s*rel="next"/.exec(response.headers.get("link") ?? "");
  return { models: await response.json(), next: next ? next[1] : null };
}

export async function render(main, { signal, query, navigate }) {
  const body = h("div", null, loading());
  const wanted = query.get("id");
  // One of the models' labels, as GET /models?metadata=key:value filters by it.
  const filter = query.get("metadata") || "";
  const filterInput = h("input", {
    type: "search", name: "metadata", value: filter, placeholder: "name:churn", size: 18,
  });
  const filterForm = h("form", { class: "filters", "aria-label": "Filter models" },
    field("Metadata", filterInput), h("button", { type: "submit" }, "Apply"));
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = filterInput.value.trim();
    navigate(value ? `/models?metadata=${encodeURIComponent(value)}` : "/models");
  });
  main.append(h("h1", null, "Models"), filterForm, body);
  // A page at a time: every model at once (each with its label editor) froze the tab
  // for an account with thousands.
  const base = new URLSearchParams({ limit: String(PAGE) });
  if (filter) base.set("metadata", filter);
  const reload = async () => {
    try {
      const first = await modelsPage(base, signal);
      const models = [...first.models];
      if (!models.length) {
        const none = filter ? `No models with the label ${filter}.` : "No fitted models yet. A fit or fit-predict job makes one.";
        body.replaceChildren(h("p", { class: "empty" }, none));
        return;
      }
      // A model linked to (?id=) that is not on the first page is shown first.
      if (wanted && !models.some((model) => model.id === wanted)) {
        const linked = await call("GET", `/models/${wanted}`, { signal }).catch(() => null);
        if (linked) models.unshift(linked);
      }
      const list = h("div", null, models.map((model) => modelCard(model, reload, model.id === wanted, signal)));
      const more = h("div", { class: "actions" });
      const errors = h("div");
      // The next page as the API names it (its Link header, present only when a model
      // follows): its cursor holds even if the page's last model is deleted meanwhile.
      const offerMore = (next) => {
        more.replaceChildren();
        if (!next) return;
        more.append(actionButton(`More models (${PAGE} at a time)`, async () => {
          const page = await modelsPage(next, signal);
          list.append(...page.models.filter((model) => model.id !== wanted).map((model) => modelCard(model, reload, false, signal)));
          offerMore(page.next);
        }, { errors, kind: "secondary" }));
      };
      offerMore(first.next);
      body.replaceChildren(list, more, errors);
      if (wanted) document.getElementById(`model-${wanted}`)?.querySelector("summary")?.focus();
    } catch (error) {
      if (!signal.aborted) body.replaceChildren(errorBox(error, "Could not list models"));
    }
  };
  await reload();
}
