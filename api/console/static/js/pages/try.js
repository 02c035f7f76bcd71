// Try it: a CSV from the person's disk to predictions, without code. The train
// file's header is read here to offer the target column; a fit-predict job is
// submitted as a multipart upload, followed live, and its result scored
// against the test file's labels when it has them.

import { ApiError, call, downloadResult, followJob, isFinished } from "../api.js";
import { field, fill, h, select } from "../dom.js";
import { confusionMatrix, predictedVsActual, resultTable } from "../charts.js";
import { readTable, splitColumn, writeCsv } from "../csv.js";
import {
  actionButton, badge, between, errorBox, formatSeconds, notice, replaceTokenHint, waitingText,
} from "../ui.js";

const OUTPUTS = {
  classification: [["labels", "labels"], ["probabilities", "labels and probabilities"]],
  regression: [["mean", "mean"], ["median", "median"], ["quantiles", "quantiles"]],
};
const PREVIEW_ROWS = 5;
const RESULT_ROWS = 50;
const HOLDOUT_SHARE = 0.2;
// What the service reads as a missing cell (Arrow's and pandas' spellings).
const MISSING = new Set(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
  "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]);

/** The first row (from 0, below the header) whose `column` is empty, or -1. */
function firstMissing(table, column) {
  const j = table.columns.indexOf(column);
  return table.rows.findIndex((row) => MISSING.has(row[j] ?? ""));
}

function rowsText(n) {
  return `${n} row${n === 1 ? "" : "s"}`;
}

/** Numbers with many values, or any fraction: a regression; anything else: classes. */
function guessTask(values) {
  const present = values.filter((v) => v.trim() !== "");
  const numeric = present.length > 0 && present.every((v) => Number.isFinite(Number(v)));
  if (!numeric) return "classification";
  const distinct = new Set(present.map(Number));
  const fractional = present.some((v) => !Number.isInteger(Number(v)));
  return fractional || distinct.size > 10 ? "regression" : "classification";
}

function csvBlob(table) {
  return new Blob([writeCsv([table.columns, ...table.rows])], { type: "text/csv" });
}

/** Hold out a random share of the rows as the test set (at least one row each side). */
function holdOut(table) {
  const order = table.rows.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const size = Math.min(Math.max(1, Math.round(order.length * HOLDOUT_SHARE)), order.length - 2);
  const test = new Set(order.slice(0, size));
  return {
    train: { columns: table.columns, rows: table.rows.filter((_, i) => !test.has(i)) },
    test: { columns: table.columns, rows: table.rows.filter((_, i) => test.has(i)) },
  };
}

function preview(table, caption) {
  return h("div", { class: "table-wrap" }, h("table", { class: "preview-table" },
    h("caption", null, caption),
    h("thead", null, h("tr", null, table.columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, table.rows.slice(0, PREVIEW_ROWS).map((row) => h("tr", null, row.map((cell) => h("td", null, cell)))))));
}

async function readFile(input) {
  const file = input.files?.[0];
  if (!file) return null;
  return { file, table: readTable(await file.text(), file.name) };
}

export function render(main, { signal }) {
  const trainInput = h("input", { type: "file", accept: ".csv,text/csv", required: true, name: "train_file" });
  const testInput = h("input", { type: "file", accept: ".csv,text/csv", name: "test_file" });
  const targetSelect = h("select", { name: "target", required: true, disabled: true });
  const taskSelect = select([["classification", "classification"], ["regression", "regression"]], { name: "task" });
  const outputSelect = select(OUTPUTS.classification, { name: "output" });
  const quantilesInput = h("input", { type: "text", name: "quantiles", value: "0.1,0.5,0.9", inputmode: "decimal" });
  const quantilesField = field("Quantiles", quantilesInput, "Comma-separated, each between 0 and 1.");
  quantilesField.hidden = true;
  const callbackInput = h("input", { type: "url", name: "callback_url", placeholder: "https://example.com/hooks/tabpfn" });
  const optionsInput = h("input", { type: "text", name: "options", placeholder: '{"n_estimators": 4}', spellcheck: "false" });
  const metadataInput = h("input", { type: "text", name: "metadata", placeholder: '{"run": "first-try"}', spellcheck: "false" });
  const submit = h("button", { type: "submit", disabled: true }, "Run fit-predict");
  const fileInfo = h("div", { "aria-live": "polite" });
  const formErrors = h("div");
  const run = h("section", { "aria-labelledby": "run-title", hidden: true },
    h("h2", { id: "run-title" }, "Run"));
  const runBody = h("div");
  run.append(runBody);

  let train = null;
  let test = null;

  const setOutputs = () => {
    const keep = outputSelect.value;
    outputSelect.replaceChildren(...OUTPUTS[taskSelect.value].map(([v, text]) => h("option", { value: v }, text)));
    if ([...outputSelect.options].some((o) => o.value === keep)) outputSelect.value = keep;
    quantilesField.hidden = outputSelect.value !== "quantiles";
  };
  taskSelect.addEventListener("change", setOutputs);
  outputSelect.addEventListener("change", () => { quantilesField.hidden = outputSelect.value !== "quantiles"; });

  const guess = () => {
    if (!train) return;
    const { values } = splitColumn(train.table, targetSelect.value);
    taskSelect.value = guessTask(values ?? []);
    setOutputs();
  };
  targetSelect.addEventListener("change", guess);

  const describe = () => {
    const parts = [];
    if (train) {
      parts.push(notice(`${train.file.name}: ${rowsText(train.table.rows.length)}, ${train.table.columns.length} columns.`),
        preview(train.table, `First rows of ${train.file.name}`));
    }
    if (test) {
      const labelled = test.table.columns.includes(targetSelect.value);
      parts.push(notice(`${test.file.name}: ${rowsText(test.table.rows.length)}${labelled ? `, with the target column (used to score the predictions; removed before upload)` : ", without the target column (predictions only)"}.`));
    } else if (train) {
      parts.push(notice(`No test file: ${Math.round(HOLDOUT_SHARE * 100)}% of the training rows, chosen at random, are held out to test on.`));
    }
    fill(fileInfo, parts);
  };

  trainInput.addEventListener("change", async () => {
    formErrors.replaceChildren();
    train = null;
    submit.disabled = true;
    targetSelect.replaceChildren();
    targetSelect.disabled = true;
    try {
      train = await readFile(trainInput);
    } catch (error) {
      formErrors.append(errorBox(error, "Could not read the training file"));
    }
    if (train) {
      targetSelect.append(...train.table.columns.map((c) => h("option", { value: c }, c)));
      targetSelect.value = train.table.columns[train.table.columns.length - 1];
      targetSelect.disabled = false;
      submit.disabled = false;
      guess();
    }
    describe();
  });
  targetSelect.addEventListener("change", describe);
  testInput.addEventListener("change", async () => {
    formErrors.replaceChildren();
    test = null;
    try {
      test = await readFile(testInput);
    } catch (error) {
      formErrors.append(errorBox(error, "Could not read the test file"));
    }
    describe();
  });

  const form = h(
    "form",
    { class: "card try-form", "aria-labelledby": "try-title" },
    h("h2", { id: "try-title" }, "Data and settings"),
    h("div", { class: "grid-2" },
      field("Training CSV", trainInput, "UTF-8, comma-separated, with a header row."),
      field("Test CSV (optional)", testInput, "The same columns; with the target column too, the predictions are scored."),
      field("Target column", targetSelect, "Read from the training file's header."),
      field("Task", taskSelect),
      field("Output", outputSelect),
      quantilesField,
      field("Webhook URL (optional)", callbackInput, "We POST a signed event there when the job ends."),
      field("TabPFN options (optional JSON)", optionsInput),
      field("Metadata (optional JSON)", metadataInput, "Your labels for the job, to find it in Jobs."),
    ),
    fileInfo,
    formErrors,
    h("div", { class: "actions" }, submit),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    formErrors.replaceChildren();
    if (!train) return;
    const target = targetSelect.value;
    let trainTable = train.table;
    let testTable;
    let actual = null;
    if (test) {
      const split = splitColumn(test.table, target);
      testTable = split.table;
      actual = split.values;
    } else {
      // Checked here: the service would name the row of the shuffled file we send.
      const row = firstMissing(train.table, target);
      if (row !== -1) {
        formErrors.append(errorBox(new Error(
          `${train.file.name}: row ${row} (counting from 0 below the header) has no value in ` +
          `"${target}"; every training row needs its target. Fill it in or remove the row.`,
        ), "The job was not sent"));
        return;
      }
      const held = holdOut(train.table);
      trainTable = held.train;
      const split = splitColumn(held.test, target);
      testTable = split.table;
      actual = split.values;
    }
    const form = new FormData();
    form.append("task", taskSelect.value);
    form.append("target", target);
    form.append("output", outputSelect.value);
    if (outputSelect.value === "quantiles") form.append("quantiles", quantilesInput.value);
    if (callbackInput.value.trim()) form.append("callback_url", callbackInput.value.trim());
    if (optionsInput.value.trim()) form.append("options", optionsInput.value.trim());
    if (metadataInput.value.trim()) form.append("metadata", metadataInput.value.trim());
    form.append("train_file", trainTable === train.table ? train.file : csvBlob(trainTable), train.file.name);
    form.append("test_file", csvBlob(testTable), test ? test.file.name : "holdout.csv");
    submit.disabled = true;
    let job = null;
    try {
      job = await call("POST", "/jobs/fit-predict", { form, signal });
      run.hidden = false;
      await watch(job, { runBody, signal, actual, task: taskSelect.value });
    } catch (error) {
      // Once accepted, a failure is in following the job or reading its result.
      const title = job ? `Could not follow job ${job.id} (see Jobs)` : "The job was not accepted";
      if (!signal.aborted) formErrors.append(errorBox(error, title));
    } finally {
      submit.disabled = false;
    }
  });

  main.append(
    h("h1", null, "Try it with a CSV"),
    h("p", null, "Fit TabPFN on a CSV and predict another, all from this page. The data goes to the service as a fit-predict job, like any other client's."),
    form,
    run,
  );

}

async function watch(submitted, { runBody, signal, actual, task }) {
  const state = h("div", { "aria-live": "polite" });
  const steps = h("ol", { class: "run-steps" });
  const outcome = h("div");
  fill(runBody,
    h("p", null, "Job ", h("a", { href: `#/jobs/${submitted.id}` }, h("code", null, submitted.id)), " (its page has the timeline and webhooks)."),
    state, steps, outcome);
  let lastStep = "";
  const show = (job) => {
    const waiting = job.status === "queued" ? waitingText(job.waiting) : null;
    const elapsed = formatSeconds(between(job.created_at, job.finished_at));
    fill(state, h("p", { class: "run-state" }, badge(job.status), job.stage ? ` ${job.stage}` : "", ` · ${elapsed}`),
      waiting ? h("p", { class: "waiting" }, waiting.text) : null);
    const step = job.stage ? `${job.status} (${job.stage})` : job.status;
    if (step !== lastStep) {
      steps.append(h("li", null, `${step} at ${formatSeconds(between(job.created_at, null))}`));
      lastStep = step;
    }
  };
  show(submitted);
  const job = isFinished(submitted.status) ? submitted : await followJob(submitted.id, show, signal);
  if (signal.aborted || !job) return;
  show(job);
  if (job.status !== "succeeded") {
    fill(outcome, job.error
      ? [errorBox(new ApiError(0, job.error.code, job.error.message), `The job ${job.status}`),
        replaceTokenHint(job.error.code)]
      : notice(`The job ${job.status}.`, "warning"));
    return;
  }
  const result = await call("GET", `/jobs/${job.id}/result`, { signal });
  const downloadErrors = h("div");
  const parts = [h("h3", null, "Results")];
  const labelled = actual && actual.length === result.predictions.length && actual.some((v) => String(v ?? "").trim() !== "");
  if (labelled && task === "classification") {
    parts.push(confusionMatrix(actual, result.predictions).node);
  } else if (labelled && task === "regression") {
    parts.push(predictedVsActual(actual, result.predictions).node);
  } else {
    parts.push(notice("The test rows have no target values, so the predictions cannot be scored."));
  }
  parts.push(
    h("h3", null, "Predictions"),
    h("p", null, `${result.predictions.length} rows${result.predictions.length > RESULT_ROWS ? `; the first ${RESULT_ROWS}` : ""}:`),
    resultTable(result, { limit: RESULT_ROWS, actual: labelled ? actual : null }),
    h("div", { class: "actions" },
      actionButton("Download predictions (CSV)", () => downloadResult(job.id, "csv"), { errors: downloadErrors }),
      actionButton("Download predictions (Parquet)", () => downloadResult(job.id, "parquet"), { errors: downloadErrors, kind: "secondary" })),
    downloadErrors,
  );
  fill(outcome, parts);
}
