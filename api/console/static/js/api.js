// The console's only way to the service: the public API with the caller's key
// as a Bearer token, exactly as any other client calls it.
//
// The key lives in sessionStorage only (gone when the tab closes): never in a
// cookie, a URL or a log. EventSource cannot send an Authorization header, so
// event streams are read with fetch() and a stream reader.

const KEY_STORAGE = "tabpfn-api-key";
// The API sits beside the console: <root>/console/ and <root>/api/v1/.
export const API_ROOT = new URL("../api/v1/", document.baseURI).href.replace(/\/$/, "");

/** An error answer of the API: {"detail", "code"} and the HTTP status. */
export class ApiError extends Error {
  constructor(status, code, detail, extra = {}) {
    super(detail);
    this.status = status;
    this.code = code;
    this.extra = extra;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

// Called when the service refuses the key (revoked, unknown), with the key that was
// refused: the app signs out.
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page, a dropped connection): say what we know.
  }
  if (body && typeof body.detail === "string" && typeof body.code === "string") {
    const { detail, code, ...extra } = body;
    return new ApiError(response.status, code, detail, extra);
  }
  return new ApiError(
    response.status,
    `http_${response.status}`,
    `The service answered ${response.status} ${response.statusText || ""}`.trim() + ".",
  );
}

/**
 * Call the API. `json` sends a JSON body, `form` a FormData (multipart);
 * `as` is "json" (default), "blob" or "response". Throws ApiError.
 */
export async function call(method, path, { json, form, as = "json", key, signal, headers } = {}) {
  const apiKey = key ?? getKey();
  const init = { method, headers: { ...headers }, signal, cache: "no-store" };
  if (apiKey) init.headers.Authorization = `Bearer ${apiKey}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary
  }
  let response;
  try {
    response = await fetch(API_ROOT + path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "The service could not be reached; check your connection and retry.");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    // Only a key the service refuses signs out; upstream_auth_failed is about the TabPFN token.
    if (response.status === 401 && error.code === "unauthorized" && apiKey && !key) {
      onUnauthorized(error, apiKey);
    }
    throw error;
  }
  if (as === "response") return response;
  if (as === "blob") return response.blob();
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Follow a job's server-sent events until it ends; `onJob` gets each Job.
 * Reconnects after a dropped stream; stops when `signal` aborts. Resolves with
 * the final Job.
 */
export async function followJob(jobId, onJob, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const response = await call("GET", `/jobs/${encodeURIComponent(jobId)}/events`, {
        as: "response",
        signal,
        headers: { Accept: "text/event-stream" },
      });
      for await (const event of readEvents(response.body, signal)) {
        if (event.event !== "job") continue;
        last = JSON.parse(event.data);
        onJob(last);
      }
      if (last && isFinished(last.status)) return last;
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") return last;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
    }
    await sleep(2000, signal); // dropped: the stream's first event is the current state again
  }
  return last;
}

async function* readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const stop = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", stop, { once: true });
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = { event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const name = colon === -1 ? line : line.slice(0, colon);
          const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "event") event.event = value;
          else if (name === "data") event.data.push(value);
        }
        if (event.data.length) yield { event: event.event, data: event.data.join("\n") };
      }
    }
  } finally {
    signal.removeEventListener("abort", stop);
  }
}

export function isFinished(status) {
  return status === "succeeded" || status === "failed" || status === "canceled";
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/** Save a Blob as a file through a temporary link (no navigation, no key in a URL). */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** Download a job's result table: CSV or Parquet, fetched with the key. */
export async function downloadResult(jobId, format) {
  const blob = await call("GET", `/jobs/${encodeURIComponent(jobId)}/result?format=${format}`, {
    as: "blob",
  });
  saveBlob(blob, `${jobId}.${format}`);
}
