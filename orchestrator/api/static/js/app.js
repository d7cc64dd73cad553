// The shell: hash routing (#/runs, #/runs/<id>, ...), the signed-in name and role, notices.

import { signOut, whoami } from "./api.js";
import { clear, h } from "./dom.js";
import { failed } from "./notice.js";
import * as approvals from "./pages/approvals.js";
import * as audit from "./pages/audit.js";
import * as breakers from "./pages/breakers.js";
import * as dlq from "./pages/dlq.js";
import * as report from "./pages/report.js";
import * as run from "./pages/run.js";
import * as runs from "./pages/runs.js";
import * as schedules from "./pages/schedules.js";
import * as workflows from "./pages/workflows.js";

const ROUTES = [
  [/^\/?$/, () => runs],
  [/^\/runs\/?$/, () => runs],
  [/^\/runs\/([^/]+)\/?$/, () => run],
  [/^\/approvals\/?$/, () => approvals],
  [/^\/dlq\/?$/, () => dlq],
  [/^\/dlq\/([^/]+)\/?$/, () => dlq],
  [/^\/workflows\/?$/, () => workflows],
  [/^\/workflows\/([^/]+)\/?$/, () => workflows],
  [/^\/schedules\/?$/, () => schedules],
  [/^\/breakers\/?$/, () => breakers],
  [/^\/audit\/?$/, () => audit],
  [/^\/report\/?$/, () => report],
];

let cleanup = null;
function parseHash() {
  const raw = decodeURIComponentSafe(location.hash.replace(/^#/, "")) || "/runs";
  const [path, search = ""] = raw.split("?");
  return { path, query: new URLSearchParams(search) };
}

function decodeURIComponentSafe(text) {
  try {
    return decodeURI(text);
  } catch {
    return text;
  }
}

async function showUser() {
  const box = clear(document.getElementById("whoami"));
  try {
    const me = await whoami();
    document.body.dataset.role = me.role;
    box.append(h("span", { class: "name" }, me.name), " ", h("span", { class: `role role-${me.role}` }, me.role));
    if (sessionStorage.getItem("orchestrator.token")) {
      box.append(" ", h("button", { class: "link", onclick: () => (signOut(), location.reload()) }, "sign out"));
    }
  } catch (error) {
    box.append(h("span", { class: "muted" }, "not signed in"));
    throw error;
  }
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.warn("cleanup", error);
    }
    cleanup = null;
  }
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  clear(main);
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", path.startsWith(`/${a.dataset.page}`) || (path === "/" && a.dataset.page === "runs"));
  }
  if (!found) {
    main.append(h("p", { class: "muted" }, "No such page."));
    return;
  }
  const [pattern, page] = found;
  const params = pattern.exec(path).slice(1).map(decodeURIComponentSafe);
  try {
    await showUser();
    const result = await page().render(main, params, query);
    if (typeof result === "function") cleanup = result;
  } catch (error) {
    failed(error);
    main.append(h("p", { class: "error" }, error.message || String(error)));
  }
}

window.addEventListener("hashchange", route);
route();
