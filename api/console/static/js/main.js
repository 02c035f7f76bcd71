// The console's shell: hash routes (#/jobs, #/jobs/<id>, ...), sign-in state,
// and one AbortController per page so leaving a page stops its streams and timers.

import { clearKey, getKey, whenUnauthorized } from "./api.js";
import { fill } from "./dom.js";
import { errorBox } from "./ui.js";
import * as jobPage from "./pages/job.js";
import * as jobsPage from "./pages/jobs.js";
import * as keysPage from "./pages/keys.js";
import * as modelsPage from "./pages/models.js";
import * as signinPage from "./pages/signin.js";
import * as tokenPage from "./pages/token.js";
import * as tryPage from "./pages/try.js";
import * as usagePage from "./pages/usage.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const flash = document.getElementById("flash");
const signOutButton = document.getElementById("sign-out");

const ROUTES = [
  [/^\/jobs\/([0-9a-fA-F-]{36})$/, jobPage, "jobs"],
  [/^\/jobs$/, jobsPage, "jobs"],
  [/^\/try$/, tryPage, "try"],
  [/^\/models$/, modelsPage, "models"],
  [/^\/usage$/, usagePage, "usage"],
  [/^\/keys$/, keysPage, "keys"],
  [/^\/token$/, tokenPage, "token"],
  [/^\/signin$/, signinPage, null],
];

let current = null;
// A message for the next page shown (e.g. why the console signed out).
let pendingFlash = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

export function navigate(path) {
  if (location.hash === `#${path}`) route();
  else location.hash = path;
}

function signOut(flashNode) {
  clearKey();
  pendingFlash = flashNode;
  navigate("/signin");
}

whenUnauthorized((error, refusedKey) => {
  // Several requests in flight can be refused together. The first signs out; the
  // others must not sign out again, or their second render of the sign-in page
  // would clear the message the first left there (nor sign out a key signed in since).
  if (refusedKey !== getKey()) return;
  signOut(errorBox(error, "Signed out: the service refused this API key"));
});

signOutButton.addEventListener("click", () => signOut(null));

// The skip link moves the focus itself: following "#main" would change the route.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

function route() {
  const { path, query } = parseHash();
  const signedIn = Boolean(getKey());
  if (!signedIn && path !== "/signin") {
    const next = path === "/" ? "/jobs" : path;
    location.replace(`#/signin?next=${encodeURIComponent(next)}`);
    return;
  }
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const match = ROUTES.find(([pattern]) => pattern.test(path));
  const [pattern, page, section] = match ?? ROUTES[1];
  const params = path.match(pattern)?.slice(1) ?? [];

  nav.hidden = !signedIn || page === signinPage;
  signOutButton.hidden = nav.hidden;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.page === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (pendingFlash) {
    fill(flash, pendingFlash);
    pendingFlash = null;
  } else {
    flash.replaceChildren();
  }
  main.replaceChildren();
  const ctx = { signal: controller.signal, params, query, navigate, signOut };
  Promise.resolve(page.render(main, ctx)).catch((error) => {
    if (error?.name === "AbortError" || controller.signal.aborted) return;
    main.append(errorBox(error));
  });
  if (document.activeElement !== document.body && !main.contains(document.activeElement)) {
    main.focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", route);
route();
