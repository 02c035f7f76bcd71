// Tables and charts drawn with DOM APIs: inline SVG built element by element,
// every label a text node. Colours come from attributes and CSS classes, never
// inline styles (the Content-Security-Policy forbids them).

import { h, s } from "./dom.js";
import { formatSeconds } from "./ui.js";

const COLOURS = {
  queue: "#8a6d00",
  fit: "#1f5fbf",
  refit: "#5b3cc4",
  predict: "#0f7b6c",
  other: "#6b7280",
};

function number(value, digits = 3) {
  return typeof value === "number" ? String(Number(value.toFixed(digits))) : String(value ?? "");
}

/** The predictions as a table: row, [actual], prediction, probabilities or quantiles. */
export function resultTable(result, { limit = 20, actual = null } = {}) {
  const n = Math.min(limit, result.predictions.length);
  const classes = result.classes ?? [];
  // In numeric order: the result's JSON keeps PostgreSQL's key order (by length).
  const quantiles = Object.keys(result.quantiles ?? {}).sort((a, b) => Number(a) - Number(b));
  const headers = ["#"];
  if (actual) headers.push("actual");
  headers.push("prediction");
  if (result.probabilities) headers.push(...classes.map((c) => `proba ${c}`));
  headers.push(...quantiles.map((q) => `q ${q}`));
  const rows = [];
  for (let i = 0; i < n; i += 1) {
    const cells = [String(i + 1)];
    if (actual) cells.push(String(actual[i] ?? ""));
    cells.push(number(result.predictions[i], 4));
    if (result.probabilities) cells.push(...result.probabilities[i].map((p) => number(p)));
    cells.push(...quantiles.map((q) => number(result.quantiles[q][i], 4)));
    rows.push(cells);
  }
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { class: "results-table" },
      h("caption", { class: "visually-hidden" }, "Predictions"),
      h("thead", null, h("tr", null, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", null, rows.map((cells) => h("tr", null, cells.map((cell) => h("td", null, cell)))))),
  );
}

// A group's seconds: its end-to-end "elapsed_s" when TabPFN reports one, else its parts summed.
function groupSeconds(values) {
  if (!values || typeof values !== "object") return typeof values === "number" ? values : 0;
  if (typeof values.elapsed_s === "number") return values.elapsed_s;
  return Object.values(values).filter((v) => typeof v === "number").reduce((a, v) => a + v, 0);
}

/** A stacked bar of where a finished job's time went: queued, TabPFN calls, the rest. */
export function timingBar(job) {
  const total = (new Date(job.finished_at) - new Date(job.created_at)) / 1000;
  if (!(total > 0)) return null;
  const queued = (new Date(job.started_at) - new Date(job.created_at)) / 1000;
  const timings = job.upstream_timings ?? {};
  const parts = [
    ["queue", "queued", queued],
    ["fit", "TabPFN fit", groupSeconds(timings.fit)],
    ["refit", "TabPFN refit", groupSeconds(timings.refit)],
    ["predict", "TabPFN predict", groupSeconds(timings.predict)],
  ].filter(([, , v]) => v > 0);
  const known = parts.reduce((a, [, , v]) => a + v, 0);
  if (total - known > 0) parts.push(["other", "worker and transfers", total - known]);
  const scale = 1000 / Math.max(total, known);
  let x = 0;
  const rects = parts.map(([key, label, seconds]) => {
    const width = Math.max(seconds * scale, 2);
    const rect = s("rect", { x, y: 0, width, height: 24, fill: COLOURS[key] }, s("title", null, `${label}: ${formatSeconds(seconds)}`));
    x += width;
    return rect;
  });
  const description = parts.map(([, label, seconds]) => `${label} ${formatSeconds(seconds)}`).join(", ");
  return h(
    "figure",
    { class: "timing-figure" },
    s("svg", { viewBox: `0 0 ${Math.max(x, 1000)} 24`, preserveAspectRatio: "none", class: "timing-bar", role: "img", "aria-label": `Where the time went: ${description}` }, rects),
    h("figcaption", null, h("ul", { class: "legend" }, parts.map(([key, label, seconds]) =>
      h("li", null, s("svg", { width: 12, height: 12, "aria-hidden": "true" }, s("rect", { width: 12, height: 12, fill: COLOURS[key] })),
        ` ${label}: ${formatSeconds(seconds)}`)))),
  );
}

/** Same value for labels that differ only in type ("1" from a CSV, 1 from JSON). */
export function labelKey(value) {
  const text = String(value ?? "").trim();
  return text !== "" && Number.isFinite(Number(text)) ? String(Number(text)) : text;
}

/** Whether a cell holds a value: a blank one in a CSV (or null from JSON) does not. */
function isPresent(value) {
  return value !== null && value !== undefined && String(value).trim() !== "";
}

/** The rows whose actual value and prediction are both there, as two lists. */
function scored(actual, predicted) {
  const kept = actual.map((a, i) => [a, predicted[i]]).filter(([a, p]) => isPresent(a) && isPresent(p));
  return [kept.map(([a]) => a), kept.map(([, p]) => p)];
}

/** A confusion matrix as a table: rows the actual class, columns the predicted one
 * (rows without an actual value are left out: a blank was its own class). */
export function confusionMatrix(allActual, allPredicted) {
  const [actual, predicted] = scored(allActual, allPredicted);
  const labels = [];
  const seen = new Map();
  for (const value of [...actual, ...predicted]) {
    const key = labelKey(value);
    if (!seen.has(key)) {
      seen.set(key, labels.length);
      labels.push(String(value));
    }
  }
  const counts = labels.map(() => labels.map(() => 0));
  let correct = 0;
  actual.forEach((value, i) => {
    const a = seen.get(labelKey(value));
    const p = seen.get(labelKey(predicted[i]));
    counts[a][p] += 1;
    if (a === p) correct += 1;
  });
  const max = Math.max(1, ...counts.flat());
  const accuracy = actual.length ? correct / actual.length : 0;
  const table = h(
    "table",
    { class: "confusion" },
    h("caption", null, `Confusion matrix: ${correct} of ${actual.length} right (accuracy ${(accuracy * 100).toFixed(1)}%)`),
    h("thead", null,
      h("tr", null, h("td", { class: "corner" }), h("th", { scope: "colgroup", colspan: labels.length }, "predicted")),
      h("tr", null, h("th", { scope: "col" }, "actual"), labels.map((label) => h("th", { scope: "col" }, label)))),
    h("tbody", null, labels.map((label, i) => h("tr", null,
      h("th", { scope: "row" }, label),
      counts[i].map((count, j) => h("td", {
        class: ["count", `heat-${Math.round((count / max) * 5)}`, i === j ? "diagonal" : ""],
      }, String(count)))))),
  );
  return { node: h("div", { class: "table-wrap" }, table), accuracy, correct };
}

function ticks(min, max, count = 5) {
  const step = (max - min) / (count - 1 || 1);
  return Array.from({ length: count }, (_, i) => min + step * i);
}

/** Predicted against actual for a regression, with the y = x line. */
export function predictedVsActual(allActual, allPredicted) {
  // Blanks left out: Number("") and Number(null) are 0, and counted as actual zeros.
  const [actual, predicted] = scored(allActual, allPredicted);
  const pairs = actual.map((a, i) => [Number(a), Number(predicted[i])]).filter(([a, p]) => Number.isFinite(a) && Number.isFinite(p));
  if (!pairs.length) {
    return { node: h("p", { class: "muted" }, "No row has both a number to score and a prediction."), r2: NaN, mae: NaN };
  }
  const values = pairs.flat();
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05;
  lo -= pad; hi += pad;
  const size = 360, left = 56, bottom = 40, top = 12, right = 12;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (size - left - right);
  const y = (v) => size - bottom - ((v - lo) / (hi - lo)) * (size - top - bottom);
  const n = pairs.length;
  const mean = pairs.reduce((acc, [a]) => acc + a, 0) / (n || 1);
  const ssRes = pairs.reduce((acc, [a, p]) => acc + (a - p) ** 2, 0);
  const ssTot = pairs.reduce((acc, [a]) => acc + (a - mean) ** 2, 0);
  const mae = pairs.reduce((acc, [a, p]) => acc + Math.abs(a - p), 0) / (n || 1);
  const r2 = ssTot > 0 ? 1 - ssRes / ssTot : NaN;
  const axis = ticks(lo, hi);
  const svg = s(
    "svg",
    { viewBox: `0 0 ${size} ${size}`, class: "scatter", role: "img",
      "aria-label": `Predicted against actual for ${n} rows; R² ${number(r2)}, mean absolute error ${number(mae)}` },
    s("rect", { x: left, y: top, width: size - left - right, height: size - top - bottom, class: "plot-area" }),
    axis.map((v) => [
      s("line", { x1: x(v), x2: x(v), y1: top, y2: size - bottom, class: "grid" }),
      s("line", { x1: left, x2: size - right, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: x(v), y: size - bottom + 16, "text-anchor": "middle", class: "tick" }, number(v, 2)),
      s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, number(v, 2)),
    ]),
    s("line", { x1: x(lo), y1: y(lo), x2: x(hi), y2: y(hi), class: "diagonal-line" }),
    pairs.map(([a, p]) => s("circle", { cx: x(a), cy: y(p), r: 3.5, class: "point" }, s("title", null, `actual ${a}, predicted ${number(p, 4)}`))),
    s("text", { x: left + (size - left - right) / 2, y: size - 6, "text-anchor": "middle", class: "axis-label" }, "actual"),
    s("text", { x: 14, y: top + (size - top - bottom) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 14 ${top + (size - top - bottom) / 2})` }, "predicted"),
  );
  return {
    node: h("figure", { class: "scatter-figure" }, svg,
      h("figcaption", null, `Predicted vs actual, ${n} rows: R² ${number(r2)}, mean absolute error ${number(mae)}.`)),
    r2,
    mae,
  };
}

/** Horizontal bars of used against limit, one per row of [label, used, limit, note]. */
export function usageBars(rows) {
  const width = 640, rowHeight = 62;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${rows.length * rowHeight + 4}`, class: "usage-chart", role: "img",
    "aria-label": rows.map(([label, used, limit]) => `${label}: ${used} of ${limit < 0 ? "unlimited" : limit}`).join("; "),
  });
  rows.forEach(([label, used, limit, note], i) => {
    const top = i * rowHeight + 4;
    const unlimited = !(limit > 0);
    const share = unlimited ? 0 : Math.min(used / limit, 1);
    const level = share >= 0.9 ? "high" : share >= 0.6 ? "mid" : "low";
    svg.append(s(
      "g",
      null,
      s("text", { x: 0, y: top + 16, class: "bar-label" }, label),
      note ? s("text", { x: width, y: top + 16, "text-anchor": "end", class: "bar-note" }, note) : null,
      s("rect", { x: 0, y: top + 24, width, height: 26, rx: 3, class: "bar-track" }),
      s("rect", { x: 0, y: top + 24, width: Math.max(share * width, used > 0 ? 3 : 0), height: 26, rx: 3, class: `bar-fill bar-${level}` }),
      s("text", { x: 8, y: top + 42, class: "bar-value" },
        unlimited ? `${used} used (no limit)` : `${used} of ${limit} (${Math.round(share * 100)}%)`),
    ));
  });
  return svg;
}
