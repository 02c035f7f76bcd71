// Usage: the TabPFN account's budget against its limits, and the rate windows
// (per minute and per hour) when the service reports them.

import { call } from "../api.js";
import { fill, h } from "../dom.js";
import { usageBars } from "../charts.js";
import { actionButton, errorBox, formatTime, loading, replaceTokenHint } from "../ui.js";

const KNOWN = new Set(["current_usage", "usage_limit", "reset_time", "rate_windows"]);

function budgetRows(usage) {
  const rows = [];
  if (typeof usage.current_usage === "number") {
    const limit = typeof usage.usage_limit === "number" ? usage.usage_limit : -1;
    rows.push(["TabPFN budget", usage.current_usage, limit, usage.reset_time ? `resets ${formatTime(usage.reset_time)}` : ""]);
  }
  for (const window of Array.isArray(usage.rate_windows) ? usage.rate_windows : []) {
    rows.push([
      `${window.kind} per ${window.window}`,
      Number(window.used ?? 0),
      Number(window.limit ?? -1),
      window.resets_at ? `resets ${formatTime(window.resets_at)}` : "",
    ]);
  }
  return rows;
}

function details(usage) {
  const items = [
    ["Used", String(usage.current_usage ?? "—")],
    ["Limit", usage.usage_limit === -1 ? "unlimited" : String(usage.usage_limit ?? "—")],
    ["Resets", formatTime(usage.reset_time)],
  ];
  for (const [name, value] of Object.entries(usage)) {
    if (!KNOWN.has(name)) items.push([name, typeof value === "object" ? JSON.stringify(value) : String(value)]);
  }
  return h("dl", { class: "summary" }, items.map(([term, value]) => [h("dt", null, term), h("dd", null, value)]));
}

export async function render(main, { signal }) {
  const body = h("div", null, loading());
  const errors = h("div");
  const load = async () => {
    try {
      const usage = await call("GET", "/usage", { signal });
      const rows = budgetRows(usage);
      fill(
        body,
        h("figure", { class: "usage-figure" },
          usageBars(rows),
          h("figcaption", null, "Used against each limit of your TabPFN account, as TabPFN reports it.")),
        details(usage),
        Array.isArray(usage.rate_windows) ? null
          : h("p", { class: "muted" }, "Per-minute and per-hour rate windows are not reported by this service version."),
      );
    } catch (error) {
      // Usage is read with the stored token: its upstream_auth_failed is that token's.
      if (!signal.aborted) fill(body, errorBox(error, "Could not read your usage"), replaceTokenHint(error.code));
    }
  };
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Usage"), actionButton("Refresh", load, { errors, kind: "secondary" })),
    errors,
    body,
  );
  await load();
}
