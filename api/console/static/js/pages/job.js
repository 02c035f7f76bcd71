// One job: its state live, a timeline with timings, why it waits, its error,
// its webhook deliveries (with redeliver), and its result (preview, downloads).

import { call, downloadResult, followJob, isFinished, sleep } from "../api.js";
import { fill, h } from "../dom.js";
import { resultTable, timingBar } from "../charts.js";
import { labelEditor } from "../labels.js";
import {
  actionButton, badge, between, errorBox, formatSeconds, formatTime, loading, replaceTokenHint, waitingText,
} from "../ui.js";

const PREVIEW_ROWS = 20;
const WAITING_REFRESH_MS = 10000;

function summary(job) {
  const rows = [
    ["Status", h("span", null, badge(job.status), job.stage ? ` ${job.stage}` : "")],
    ["Type", job.type],
    ["Task", job.task ?? "—"],
    ["Model", job.model_id ? h("a", { href: `#/models?id=${job.model_id}` }, h("code", null, job.model_id)) : "—"],
    ["Attempts", String(job.attempts)],
    ["Created", formatTime(job.created_at)],
    ["Started", formatTime(job.started_at)],
    ["Finished", formatTime(job.finished_at)],
  ];
  return h("dl", { class: "summary summary-wide" }, rows.map(([term, value]) => [h("dt", null, term), h("dd", null, value)]));
}

// {"fit": {"fit_s": 0.4, "queue_wait_s": 0}} -> ["fit: fit 0.40 s · queue wait 0.00 s"]
function upstreamTimings(timings) {
  const lines = [];
  for (const [group, values] of Object.entries(timings ?? {})) {
    const parts = [];
    if (values && typeof values === "object") {
      for (const [name, seconds] of Object.entries(values)) {
        if (typeof seconds === "number") {
          parts.push(`${name.replace(/_s$/, "").replaceAll("_", " ")} ${formatSeconds(seconds)}`);
        }
      }
    } else if (typeof values === "number") {
      parts.push(formatSeconds(values));
    }
    if (parts.length) lines.push(`${group}: ${parts.join(" · ")}`);
  }
  return lines;
}

function timeline(job, seen) {
  const steps = [];
  const step = (title, when, detail, kind = "") =>
    steps.push(h("li", { class: ["timeline-step", kind] },
      h("span", { class: "timeline-title" }, title),
      when ? h("time", { datetime: when }, formatTime(when)) : null,
      detail ? h("span", { class: "timeline-detail" }, detail) : null));

  step("Submitted", job.created_at);
  if (job.started_at) {
    step(`Started${job.attempts > 1 ? ` (attempt ${job.attempts})` : ""}`, job.started_at,
      `after ${formatSeconds(between(job.created_at, job.started_at))} queued`);
  }
  // Stages seen live on this page, in order (the API reports the current one only).
  for (const [stage, at] of seen) {
    step(`Stage: ${stage}`, at, "seen live on this page", "timeline-live");
  }
  const timings = upstreamTimings(job.upstream_timings);
  if (timings.length) {
    steps.push(h("li", { class: "timeline-step" },
      h("span", { class: "timeline-title" }, "Time reported by TabPFN"),
      h("ul", { class: "timings" }, timings.map((line) => h("li", null, line)))));
  }
  if (isFinished(job.status)) {
    const ran = job.started_at ? `ran ${formatSeconds(between(job.started_at, job.finished_at))}` : "never started";
    step(job.status[0].toUpperCase() + job.status.slice(1), job.finished_at,
      `${ran}; ${formatSeconds(between(job.created_at, job.finished_at))} in all`, `timeline-${job.status}`);
  } else {
    const waiting = job.status === "queued" ? waitingText(job.waiting) : null;
    step(`Now: ${job.status}${job.stage ? ` (${job.stage})` : ""}`, null,
      waiting ? waiting.text : `for ${formatSeconds(between(job.started_at ?? job.created_at, null))}`, "timeline-now");
  }
  const bar = isFinished(job.status) && job.started_at ? timingBar(job) : null;
  return [h("ol", { class: "timeline" }, steps), bar];
}

function waitingNotice(job) {
  const waiting = job.status === "queued" ? waitingText(job.waiting) : null;
  if (!waiting) return null;
  return h("div", { class: "notice warning waiting", role: "status" },
    h("p", { class: "notice-title" }, "Waiting: ", h("code", null, waiting.reason)),
    h("p", null, waiting.text));
}

function jobError(job) {
  if (!job.error) return null;
  return h("div", { class: "notice error job-error", role: "alert" },
    h("p", { class: "notice-title" }, `The job ${job.status === "canceled" ? "was canceled" : "failed"}`),
    h("p", null, h("span", { class: "error-message" }, job.error.message || "(no message)"), " ",
      h("code", { class: "error-code" }, job.error.code)),
    replaceTokenHint(job.error.code));
}

function deliveriesView(deliveries) {
  if (!deliveries.length) {
    return h("p", { class: "muted" }, "No webhook deliveries: this job was submitted without a callback_url.");
  }
  return deliveries.map((delivery) => h(
    "article",
    { class: "delivery", dataset: { status: delivery.status } },
    h("p", null, badge(delivery.status), " ", h("code", null, delivery.event_type), " to ",
      h("span", { class: "url" }, delivery.url)),
    h("p", { class: "muted" }, `webhook-id ${delivery.webhook_id} · created ${formatTime(delivery.created_at)}`,
      delivery.next_attempt_at ? ` · next attempt ${formatTime(delivery.next_attempt_at)}` : ""),
    delivery.attempts.length
      ? h("ol", { class: "attempts" }, delivery.attempts.map((attempt) => h("li", null,
        `${formatTime(attempt.attempted_at)}: `,
        attempt.status_code === null ? "no answer" : `HTTP ${attempt.status_code}`,
        ` in ${attempt.latency_ms} ms`,
        attempt.error ? h("span", { class: "attempt-error" }, ` — ${attempt.error}`) : null)))
      : h("p", { class: "muted" }, "Not attempted yet."),
  ));
}

async function resultView(job, signal) {
  const result = await call("GET", `/jobs/${job.id}/result`, { signal });
  const downloadErrors = h("div");
  const downloads = h("div", { class: "actions" },
    actionButton("Download CSV", () => downloadResult(job.id, "csv"), { errors: downloadErrors }),
    actionButton("Download Parquet", () => downloadResult(job.id, "parquet"), { errors: downloadErrors, kind: "secondary" }));
  if (!Array.isArray(result.predictions)) {
    // A fit: its fields.
    return [h("dl", { class: "summary" }, Object.entries(result).map(([k, v]) =>
      [h("dt", null, k), h("dd", null, typeof v === "object" ? JSON.stringify(v) : String(v))])), downloads, downloadErrors];
  }
  const shown = Math.min(PREVIEW_ROWS, result.predictions.length);
  return [
    h("p", null, `${result.predictions.length} predictions; the first ${shown}:`),
    resultTable(result, { limit: PREVIEW_ROWS }),
    downloads,
    downloadErrors,
  ];
}

export async function render(main, { signal, params }) {
  const [jobId] = params;
  // Read before the page is drawn: a job that cannot be read (a wrong or deleted id,
  // the network) is the error alone, not a page that says "Loading…" for ever.
  let job = await call("GET", `/jobs/${jobId}`, { signal });
  const title = h("h1", null, "Job ", h("code", null, jobId));
  const actions = h("div", { class: "actions" });
  const actionErrors = h("div");
  const status = h("div", { "aria-live": "polite" });
  const timelineSection = h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"));
  const timelineBody = h("div");
  timelineSection.append(timelineBody);
  const labelsBody = h("div");
  const resultBody = h("div", null, loading("Waiting for the job to end…"));
  const hooksBody = h("div", null, loading());
  const hooksErrors = h("div");
  const hooksActions = h("div", { class: "actions" });
  main.append(
    h("p", null, h("a", { href: "#/jobs" }, "← All jobs")),
    title, actions, actionErrors, status,
    h("section", { "aria-labelledby": "labels-title" }, h("h2", { id: "labels-title" }, "Metadata"), labelsBody),
    timelineSection,
    h("section", { "aria-labelledby": "result-title" }, h("h2", { id: "result-title" }, "Result"), resultBody),
    h("section", { "aria-labelledby": "hooks-title" }, h("h2", { id: "hooks-title" }, "Webhook deliveries"),
      hooksActions, hooksErrors, hooksBody),
  );

  const seen = new Map();
  // Your labels (`metadata`): set and removed here at any point of the job's life.
  fill(labelsBody, labelEditor(`/jobs/${jobId}`, job.metadata, { signal }));

  const loadHooks = async () => {
    const deliveries = await call("GET", `/jobs/${jobId}/webhooks`, { signal });
    fill(hooksBody, deliveriesView(deliveries));
    // Made once: a button swapped in at every refresh (each second while one is
    // watched) was enabled again mid-action, and each extra click sent another event.
    if (deliveries.length && isFinished(job.status) && !hooksActions.hasChildNodes()) {
      hooksActions.append(actionButton("Redeliver webhook", async () => {
        await call("POST", `/jobs/${jobId}/webhooks/redeliver`, { signal });
        await watchHooks(deliveries.length + 1);
      }, { errors: hooksErrors }));
    }
    return deliveries;
  };
  // After a redelivery: refresh until the new delivery has been tried.
  const watchHooks = async (count) => {
    for (let i = 0; i < 30 && !signal.aborted; i += 1) {
      const deliveries = await loadHooks();
      if (deliveries.length >= count && deliveries.every((d) => d.status !== "pending")) return;
      await sleep(1000, signal);
    }
  };

  let actionsFor = null; // whether the buttons shown are a running or an ended job's
  const draw = () => {
    fill(status, summary(job), waitingNotice(job), jobError(job));
    fill(timelineBody, timeline(job, seen));
    // Rebuilt when the job ends, not at every event: a click on a rebuilt button
    // was lost, and keyboard focus with it.
    if (actionsFor === isFinished(job.status)) return;
    actionsFor = isFinished(job.status);
    actions.replaceChildren();
    if (!isFinished(job.status)) {
      actions.append(actionButton("Cancel job", async () => {
        job = await call("POST", `/jobs/${jobId}/cancel`, { signal });
        draw();
      }, { errors: actionErrors, kind: "danger" }));
    } else {
      // DELETE /jobs/{id}: the job and its data now, not after the retention period.
      actions.append(actionButton("Delete job", async () => {
        const model = job.type === "fit" && job.model_id ? " Its model stays." : "";
        if (!window.confirm(`Delete job ${jobId} with its data and result?${model}`)) return;
        await call("DELETE", `/jobs/${jobId}`, { signal });
        window.location.hash = "#/jobs";
      }, { errors: actionErrors, kind: "danger" }));
    }
  };
  const onJob = (fresh) => {
    job = fresh;
    if (fresh.stage && !seen.has(fresh.stage)) seen.set(fresh.stage, new Date().toISOString());
    draw();
  };
  // Events come on changes of state or stage; a queued job's waiting reason can
  // change without either, so it is read again now and then.
  const refreshWhileQueued = async () => {
    while (!signal.aborted && !isFinished(job.status)) {
      await sleep(WAITING_REFRESH_MS, signal);
      if (signal.aborted || job.status !== "queued") continue;
      const fresh = await call("GET", `/jobs/${jobId}`, { signal }).catch(() => null);
      if (fresh && fresh.status === "queued" && job.status === "queued") onJob(fresh);
    }
  };
  draw();
  loadHooks().catch((error) => fill(hooksBody, errorBox(error, "Could not load webhook deliveries")));

  if (!isFinished(job.status)) {
    refreshWhileQueued();
    let final;
    try {
      final = await followJob(jobId, onJob, signal);
    } catch (error) {
      // Deleted meanwhile, the key revoked, too many requests: said where the
      // result would be, and the page stops waiting.
      if (!signal.aborted) fill(resultBody, errorBox(error, "Stopped following the job"));
      return;
    }
    if (signal.aborted || !final) return;
    job = final;
    draw();
    loadHooks().catch((error) => fill(hooksBody, errorBox(error, "Could not load webhook deliveries")));
  }
  if (job.status !== "succeeded") {
    fill(resultBody, h("p", { class: "muted" }, `No result: the job ${job.status}.`));
  } else {
    try {
      fill(resultBody, await resultView(job, signal));
    } catch (error) {
      if (!signal.aborted) fill(resultBody, errorBox(error, "Could not load the result"));
    }
  }
  // Webhooks are sent just after the job ends (failed and canceled ones too): look
  // again until they settle.
  for (let i = 0; i < 10 && !signal.aborted; i += 1) {
    await sleep(1500, signal);
    if (signal.aborted) return;
    const deliveries = await loadHooks().catch(() => []);
    if (deliveries.every((d) => d.status !== "pending")) break;
  }
}
