// Quickstart in JavaScript: classify Iris flowers with TabPFN through the TabPFN API.
//
//     API_URL=http://127.0.0.1:8000 TABPFN_TOKEN=demo-token node examples/quickstart.mjs
//
// Node 18 or newer, no packages: the global fetch does the HTTP. Steps: register
// with your TabPFN token (an API key comes back), submit a fit job, wait for it
// with the long-poll GET /jobs/{id}?wait=S, submit a predict job, wait, fetch the
// result, print predictions and accuracy.

import { readFile } from "node:fs/promises";

const API_URL = (process.env.API_URL ?? "http://127.0.0.1:8000").replace(/\/+$/, "");
const API = `${API_URL}/api/v1`;
const TABPFN_TOKEN = process.env.TABPFN_TOKEN ?? "demo-token";
const DATA = new URL("./data/iris.csv", import.meta.url);
const JOB_TIMEOUT_MS = 300_000;

class APIError extends Error {
  constructor(status, body) {
    // Errors are {"detail": "a sentence", "code": "stable_code"}.
    super(`HTTP ${status}: ${body?.detail ?? "no detail"} (${body?.code ?? "unknown"})`);
    this.status = status;
    this.code = body?.code;
  }
}

async function call(method, path, { body, key, headers = {} } = {}) {
  let response;
  try {
    response = await fetch(`${API}${path}`, {
      method,
      headers: {
        ...(body ? { "content-type": "application/json" } : {}),
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...headers,
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(90_000),
    });
  } catch (error) {
    // fetch says only "fetch failed": name the service and the cause (ECONNREFUSED, …).
    const cause = error.cause?.code ?? error.cause?.message ?? error.message;
    throw new Error(`could not reach ${API_URL} (${cause}). Is the service running? ` +
      "Start one with `tabpfn-api dev`, or set API_URL.");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text.slice(0, 300) };
  }
  if (!response.ok) throw new APIError(response.status, data);
  return data;
}

// Submit with an Idempotency-Key, so sending the same request again never makes a second job.
const submit = (path, body, key) =>
  call("POST", path, { body, key, headers: { "idempotency-key": crypto.randomUUID() } });

async function waitFor(job, key) {
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  let seen = "";
  for (;;) {
    const state = `${job.status}${job.stage ? ` (${job.stage})` : ""}`;
    if (state !== seen) console.log(`  ${job.type} job: ${state}`);
    seen = state;
    if (job.status === "succeeded") return job;
    if (job.status === "failed" || job.status === "canceled") {
      const error = job.error ?? { code: job.status, message: job.status };
      throw new Error(`job ${job.id} ${job.status}: ${error.message} (${error.code})`);
    }
    if (Date.now() > deadline) throw new Error(`job ${job.id} did not finish in time`);
    const started = Date.now();
    // Long-poll: the server holds the request up to `wait` seconds (at most 60) and may
    // answer earlier; if it answered at once with nothing new, pause before asking again.
    const next = await call("GET", `/jobs/${job.id}?wait=30`, { key });
    if (next.status === job.status && next.stage === job.stage && Date.now() - started < 1000) {
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    job = next;
  }
}

async function loadIris() {
  const lines = (await readFile(DATA, "utf8")).trim().split(/\r?\n/);
  const header = lines[0].split(",");
  const rows = lines.slice(1).map((line) => line.split(","));
  return {
    columns: header.slice(0, -1), // the last column is the species, the target
    X: rows.map((row) => row.slice(0, -1).map(Number)),
    y: rows.map((row) => row.at(-1)),
  };
}

async function main() {
  const { columns, X, y } = await loadIris();
  // Every fifth flower is held out for testing (the file is sorted by species).
  const test = (_, i) => i % 5 === 4;
  const train = (_, i) => i % 5 !== 4;
  const [XTrain, yTrain, XTest, yTest] = [X.filter(train), y.filter(train), X.filter(test), y.filter(test)];
  console.log(`Iris: ${XTrain.length} training rows, ${XTest.length} test rows`);

  // 1. Register: the TabPFN token is stored encrypted; keep the API key secret.
  const account = await call("POST", "/auth/setup", { body: { tabpfn_token: TABPFN_TOKEN } });
  const key = account.api_key;
  console.log(`Registered at ${API_URL} (API key id ${account.key_id})`);

  // 2. Fit a classifier.
  const fitJob = await waitFor(
    await submit("/jobs/fit", { task: "classification", train: { X: XTrain, y: yTrain, columns } }, key),
    key,
  );
  console.log(`Model ${fitJob.model_id} is ready`);

  // 3. Predict the test rows, with class probabilities.
  const predictJob = await waitFor(
    await submit(
      "/jobs/predict",
      { model_id: fitJob.model_id, X: XTest, columns, output: "probabilities" },
      key,
    ),
    key,
  );

  // 4. The result: a label per row and one probability per class, in the order of `classes`.
  const result = await call("GET", `/jobs/${predictJob.id}/result`, { key });
  console.log(`\nSome predictions, with probabilities for ${result.classes.join(", ")}:`);
  for (let i = 0; i < XTest.length; i += 6) {
    const probabilities = result.probabilities[i].map((p) => p.toFixed(2)).join(", ");
    console.log(`  ${JSON.stringify(XTest[i])} -> ${result.predictions[i].padEnd(10)}` +
      `  (true: ${yTest[i].padEnd(10)})  [${probabilities}]`);
  }
  const correct = result.predictions.filter((p, i) => p === yTest[i]).length;
  console.log(`\nAccuracy on the ${XTest.length} test rows: ${(correct / XTest.length).toFixed(3)}`);
}

main().catch((error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
