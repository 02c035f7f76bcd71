// Jobs: the caller's jobs, newest first, with filters, cursor pagination and
// live status (event streams for the unfinished jobs shown, a refresh for new ones).

import { call, followJob, isFinished, sleep } from "../api.js";
import { field, h, select } from "../dom.js";
import { badge, between, errorBox, formatSeconds, formatTime, loading, shortId, waitingText } from "../ui.js";

const STATUSES = ["", "queued", "running", "succeeded", "failed", "canceled"];
const TYPES = ["", "fit", "predict", "fit_predict"];
const PAGE_SIZES = ["20", "50", "100"];
// Browsers allow six connections per origin; leave room for the page's other calls.
const MAX_STREAMS = 3;
const REFRESH_MS = 5000;
// For each page (its address: filters and cursor), the cursor of the page before it, so "Newer" goes back
// whichever way the page was reached (a stack of them went wrong after the browser's
// own Back); kept for the tab, so a reload keeps it too.
const PAGES_KEY = "tabpfn-jobs-pages";

function previousPages() {
  try {
    return new Map(JSON.parse(sessionStorage.getItem(PAGES_KEY) ?? "[]"));
  } catch {
    return new Map();
  }
}

function rememberPage(page, previous) {
  const pages = previousPages();
  pages.set(page, previous);
  sessionStorage.setItem(PAGES_KEY, JSON.stringify([...pages].slice(-200)));
}

function hashFor(query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) if (value) params.set(name, value);
  const search = params.toString();
  return search ? `/jobs?${search}` : "/jobs";
}

function statusCell(job) {
  const waiting = job.status === "queued" ? waitingText(job.waiting) : null;
  return h(
    "span",
    { class: "status-cell" },
    badge(job.status),
    job.stage ? h("span", { class: "muted" }, ` ${job.stage}`) : null,
    waiting ? h("span", { class: "waiting-reason", title: waiting.text }, ` waiting: ${waiting.reason}`) : null,
  );
}

function rowFor(job) {
  const duration = job.started_at ? between(job.started_at, job.finished_at) : null;
  return h(
    "tr",
    { dataset: { jobId: job.id, status: job.status } },
    h("td", null, h("a", { href: `#/jobs/${job.id}`, "aria-label": `Job ${job.id}` }, h("code", null, shortId(job.id)))),
    h("td", null, job.type),
    h("td", null, job.task ?? "—"),
    h("td", null, statusCell(job)),
    h("td", null, formatTime(job.created_at)),
    h("td", null, duration === null ? "—" : formatSeconds(duration)),
    h("td", null, job.error ? h("code", { title: job.error.message }, job.error.code) : ""),
  );
}

export async function render(main, { signal, query, navigate }) {
  const filters = {
    status: query.get("status") || "",
    type: query.get("type") || "",
    limit: query.get("limit") || "20",
    metadata: query.get("metadata") || "",
    before: query.get("before") || "",
  };

  const statusSelect = select(STATUSES.map((v) => [v, v || "any"]), { name: "status", value: filters.status });
  const typeSelect = select(TYPES.map((v) => [v, v || "any"]), { name: "type", value: filters.type });
  const sizeSelect = select(PAGE_SIZES, { name: "limit", value: filters.limit });
  // One of the labels jobs were submitted with (`metadata`), as GET /jobs filters by it.
  const metadataInput = h("input", {
    type: "search", name: "metadata", value: filters.metadata, placeholder: "order:A-17", size: 18,
  });
  const form = h(
    "form",
    { class: "filters", "aria-label": "Filter jobs" },
    field("Status", statusSelect),
    field("Type", typeSelect),
    field("Metadata", metadataInput),
    field("Per page", sizeSelect),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(hashFor({
      status: statusSelect.value, type: typeSelect.value, metadata: metadataInput.value.trim(), limit: sizeSelect.value,
    }));
  });

  const body = h("div", null, loading());
  const live = h("p", { class: "muted live-note", "aria-live": "polite" });
  main.append(
    h("div", { class: "page-head" }, h("h1", null, "Jobs"), h("a", { class: "button", href: "#/try" }, "New job from a CSV")),
    form,
    live,
    body,
  );

  const params = new URLSearchParams({ limit: filters.limit });
  if (filters.status) params.set("status", filters.status);
  if (filters.type) params.set("type", filters.type);
  if (filters.metadata) params.set("metadata", filters.metadata);
  if (filters.before) params.set("before", filters.before);

  let page;
  try {
    page = await call("GET", `/jobs?${params}`, { signal });
  } catch (error) {
    body.replaceChildren(errorBox(error, "Could not list jobs"));
    return;
  }

  const rows = new Map();
  const tbody = h("tbody");
  // `add`: a job of the page as listed. A stream's update of a job no longer shown
  // (a refresh pushed it off the page) is dropped: it was appended, out of order.
  const update = (job, { add = false } = {}) => {
    const old = rows.get(job.id);
    if (!old && !add) return;
    const row = rowFor(job);
    const hadFocus = old && old.contains(document.activeElement);
    if (old) old.replaceWith(row);
    else tbody.append(row);
    rows.set(job.id, row);
    if (hadFocus) row.querySelector("a").focus();
  };
  page.jobs.forEach((job) => update(job, { add: true }));

  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages of jobs" },
    h("button", {
      type: "button", class: "secondary", disabled: !filters.before,
      on: { click: () => navigate(hashFor({ ...filters, before: previousPages().get(hashFor(filters)) ?? "" })) },
    }, "← Newer"),
    h("button", {
      type: "button", class: "secondary", disabled: !page.next_cursor,
      on: { click: () => {
        const next = { ...filters, before: page.next_cursor };
        rememberPage(hashFor(next), filters.before); // keyed by the page's whole address:
        navigate(hashFor(next)); // a cursor reached under other filters leads elsewhere
      } },
    }, "Older →"),
  );

  const filtered = filters.status || filters.type || filters.metadata;
  if (page.jobs.length === 0) {
    body.replaceChildren(
      h("p", { class: "empty" }, filtered ? "No jobs match these filters." : "No jobs yet. ",
        filtered ? null : h("a", { href: "#/try" }, "Run one from a CSV.")),
      pager,
    );
  } else {
    body.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "jobs-table" },
          h("caption", { class: "visually-hidden" }, "Your jobs, newest first"),
          h("thead", null, h("tr", null, ["Job", "Type", "Task", "Status", "Created", "Run time", "Error"].map(
            (name) => h("th", { scope: "col" }, name),
          ))),
          tbody,
        ),
      ),
      pager,
    );
  }

  // Live: a stream per unfinished job shown (a few at most) ...
  const streamed = page.jobs.filter((job) => !isFinished(job.status)).slice(0, MAX_STREAMS);
  for (const job of streamed) {
    followJob(job.id, update, signal).catch(() => {});
  }
  // ... and, on the first page, a refresh that picks up new jobs and the rest.
  if (filters.before) return;
  live.textContent = "Updates live.";
  while (!signal.aborted) {
    await sleep(REFRESH_MS, signal);
    if (signal.aborted || document.hidden) continue;
    try {
      const fresh = await call("GET", `/jobs?${params}`, { signal });
      const known = new Set(rows.keys());
      const newcomers = fresh.jobs.filter((job) => !known.has(job.id));
      if (newcomers.length) {
        for (const row of rows.values()) row.remove();
        rows.clear();
        fresh.jobs.forEach((job) => update(job, { add: true }));
        if (!tbody.isConnected) navigate(hashFor(filters)); // the list was empty: draw the table
      } else {
        fresh.jobs.forEach((job) => {
          const row = rows.get(job.id);
          if (row && row.dataset.status !== job.status) update(job);
        });
      }
      live.textContent = "Updates live."; // again, after a pause
    } catch (error) {
      if (signal.aborted) return;
      live.textContent = `Live updates paused: ${error.message} (${error.code ?? "error"})`;
    }
  }
}
