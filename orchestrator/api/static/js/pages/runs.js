// The runs list: filters by workflow, status and time range (kept in the hash), newest first,
// "load more" by cursor, and live: new runs and status changes arrive from the list stream.

import { api, enc } from "../api.js";
import { between, duration, h, short, statusBadge, time } from "../dom.js";
import { follow } from "../sse.js";

const STATUSES = ["", "pending", "running", "paused", "succeeded", "failed", "cancelled"];

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export async function render(main, _params, query) {
  const filters = {
    workflow: query.get("workflow") || "",
    status: query.get("status") || "",
    since: query.get("since") || "",
    until: query.get("until") || "",
  };
  const workflowNames = await api("workflows").catch(() => []);
  const workflow = h("select", { name: "workflow" }, [h("option", { value: "" }, "all workflows"), ...workflowNames.map((w) => h("option", { value: w.name }, w.name))]);
  workflow.value = filters.workflow;
  const status = h("select", { name: "status" }, STATUSES.map((st) => h("option", { value: st }, st || "any status")));
  status.value = filters.status;
  const since = h("input", { type: "datetime-local", name: "since", value: toLocalInput(filters.since) });
  const until = h("input", { type: "datetime-local", name: "until", value: toLocalInput(filters.until) });
  const apply = (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (workflow.value) q.set("workflow", workflow.value);
    if (status.value) q.set("status", status.value);
    if (since.value) q.set("since", new Date(since.value).toISOString());
    if (until.value) q.set("until", new Date(until.value).toISOString());
    location.hash = `#/runs${q.toString() ? `?${q}` : ""}`;
  };
  const form = h("form", { class: "filters", onsubmit: apply }, [
    workflow,
    status,
    h("label", {}, ["from ", since]),
    h("label", {}, ["to ", until]),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/runs", class: "button-like" }, "Clear"),
  ]);
  for (const el of [workflow, status]) el.addEventListener("change", apply);
  const live = h("span", { class: "live", "data-state": "connecting" }, "connecting");
  const body = h("tbody", {});
  const tableEl = h("table", { class: "grid runs" }, [
    h("thead", {}, h("tr", {}, ["run", "workflow", "status", "created", "took", "error"].map((t) => h("th", {}, t)))),
    body,
  ]);
  const more = h("button", { type: "button", class: "more" }, "Load more");
  const empty = h("p", { class: "muted empty", hidden: true }, "No runs match.");
  main.append(h("div", { class: "page-head" }, [h("h1", {}, "Runs"), live]), form, tableEl, empty, more);

  const rows = new Map(); // run id -> tr
  const row = (r) => {
    const tr = h("tr", { "data-run": r.run_id }, [
      h("td", { class: "mono" }, h("a", { href: `#/runs/${enc(r.run_id)}` }, short(r.run_id))),
      h("td", {}, r.workflow),
      h("td", {}, statusBadge(r.status)),
      h("td", {}, time(r.created_at)),
      h("td", {}, duration(between(r.started_at, r.finished_at))),
      h("td", { class: "error-text clip" }, r.error || ""),
    ]);
    return tr;
  };
  const put = (r, atTop) => {
    const old = rows.get(r.run_id);
    const tr = row(r);
    rows.set(r.run_id, tr);
    if (old) old.replaceWith(tr);
    else if (atTop) body.prepend(tr);
    else body.append(tr);
    empty.hidden = rows.size > 0;
  };
  let cursor = null;
  let oldest = null; // the created_at of the last run loaded
  const load = async () => {
    more.disabled = true;
    const page = await api("runs", { query: { ...filters, limit: 50, cursor } });
    for (const r of page.runs) put(r, false);
    if (page.runs.length) oldest = page.runs[page.runs.length - 1].created_at;
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    empty.hidden = rows.size > 0;
  };
  more.addEventListener("click", load);
  await load();

  // a run older than the last one loaded, while more pages remain, comes with its page: shown on
  // top now, it would sit out of order there
  const unpaged = (r) => cursor && oldest && new Date(r.created_at) <= new Date(oldest);
  const matches = (r) =>
    !unpaged(r) &&
    (!filters.since || new Date(r.created_at) >= new Date(filters.since)) && (!filters.until || new Date(r.created_at) < new Date(filters.until));
  const stream = follow(
    `/api/v1/runs/stream?${new URLSearchParams(Object.entries({ workflow: filters.workflow, status: filters.status }).filter(([, v]) => v))}`,
    {
      run: (r) => {
        if (!r || !r.run_id) return;
        if (rows.has(r.run_id)) put(r, false);
        else if (matches(r)) put(r, true);
      },
    },
    {
      onState: (state) => {
        live.dataset.state = state;
        live.textContent = state === "live" ? "live" : "reconnecting…";
      },
    },
  );
  return () => stream.stop();
}

