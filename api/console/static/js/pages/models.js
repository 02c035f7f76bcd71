// Models: the caller's fitted models, their columns and classes, and deleting one.

import { call } from "../api.js";
import { h } from "../dom.js";
import { actionButton, errorBox, formatTime, loading, shortId } from "../ui.js";

function modelCard(model, reload, open) {
  const errors = h("div");
  const remove = actionButton("Delete model", async () => {
    if (!window.confirm(`Delete model ${model.id}? Predictions with it will fail afterwards.`)) return;
    await call("DELETE", `/models/${model.id}`);
    await reload();
  }, { errors, kind: "danger" });
  return h(
    "details",
    { class: "model card", open, id: `model-${model.id}` },
    h("summary", null, h("code", null, shortId(model.id)), ` ${model.task}, ${model.n_rows} rows × ${model.n_features} features, ${formatTime(model.created_at)}`),
    h("dl", { class: "summary" },
      h("dt", null, "Model id"), h("dd", null, h("code", null, model.id)),
      h("dt", null, "Task"), h("dd", null, model.task),
      h("dt", null, "Columns"), h("dd", null, h("ul", { class: "inline-list" }, model.columns.map((c) => h("li", null, c)))),
      model.classes ? [h("dt", null, "Classes"), h("dd", null, h("ul", { class: "inline-list" }, model.classes.map((c) => h("li", null, String(c)))))] : null,
      h("dt", null, "Options"), h("dd", null, h("code", null, JSON.stringify(model.options))),
      h("dt", null, "Fitted by"), h("dd", null, h("a", { href: `#/jobs/${model.fit_job_id}` }, "job ", h("code", null, shortId(model.fit_job_id)))),
    ),
    h("div", { class: "actions" }, remove),
    errors,
  );
}

export async function render(main, { signal, query }) {
  const body = h("div", null, loading());
  main.append(h("h1", null, "Models"), body);
  const wanted = query.get("id");
  const reload = async () => {
    try {
      const models = await call("GET", "/models", { signal });
      if (!models.length) {
        body.replaceChildren(h("p", { class: "empty" }, "No fitted models yet. A fit or fit-predict job makes one."));
        return;
      }
      body.replaceChildren(...models.map((model) => modelCard(model, reload, model.id === wanted)));
      if (wanted) document.getElementById(`model-${wanted}`)?.querySelector("summary")?.focus();
    } catch (error) {
      if (!signal.aborted) body.replaceChildren(errorBox(error, "Could not list models"));
    }
  };
  await reload();
}
