// The dead-letter queue: entries by status and workflow; one entry's inputs, error and traceback;
// replay (optionally with corrected inputs) and discard for an operator.

import { api, can, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { parseJson } from "../drawer.js";
import { clear, h, json, section, short, statusBadge, table, time } from "../dom.js";

export async function render(main, [entryId], query) {
  const status = h("select", { name: "status" }, ["open", "replayed", "discarded", ""].map((v) => h("option", { value: v }, v || "any status")));
  status.value = query.get("status") ?? "open";
  const workflow = h("input", { name: "workflow", placeholder: "workflow", value: query.get("workflow") || "" });
  const go = (event) => {
    event?.preventDefault();
    const q = new URLSearchParams();
    q.set("status", status.value);
    if (workflow.value) q.set("workflow", workflow.value);
    location.hash = `#/dlq?${q}`;
  };
  status.addEventListener("change", go);
  const list = h("div", {});
  const detail = h("div", {});
  main.append(
    h("div", { class: "page-head" }, [
      h("h1", {}, "Dead letters"),
      bar(action("operator", "Replay all open", () => api("dlq/replay", { method: "POST", body: { all: true, workflow: workflow.value || null } }).then(async (r) => (await load(), r)), {
        confirm: "Replay every open entry?",
        done: (r) => `replayed ${r?.replayed?.length ?? 0} entries`,
      })),
    ]),
    h("form", { class: "filters", onsubmit: go }, [status, workflow, h("button", { type: "submit" }, "Filter")]),
    detail,
    list,
  );
  const load = async () => {
    const entries = await api("dlq", { query: { status: status.value, workflow: workflow.value, limit: 200 } });
    clear(list).append(
      table(
        [
          { title: "entry", cell: (e) => h("a", { href: `#/dlq/${enc(e.id)}`, class: "mono" }, short(e.id)) },
          { title: "run", cell: (e) => h("a", { href: `#/runs/${enc(e.run_id)}`, class: "mono" }, short(e.run_id)) },
          { title: "workflow", cell: (e) => e.workflow },
          { title: "step", cell: (e) => (e.item_index === null || e.item_index === undefined ? e.step : `${e.step}[${e.item_index}]`) },
          { title: "error", cell: (e) => h("span", { class: "error-text clip" }, e.error || "") },
          { title: "attempts", cell: (e) => e.attempts },
          { title: "status", cell: (e) => statusBadge(e.status) },
          { title: "failed", cell: (e) => time(e.failed_at) },
          { title: "", cell: (e) => (e.status === "open" ? entryActions(e, load) : "") },
        ],
        entries,
        "No dead letters.",
      ),
    );
  };
  await load();
  if (entryId) await show(detail, entryId, load);
}

async function show(box, id, load) {
  const entry = await api(`dlq/${enc(id)}`);
  const inputs = can("operator") && entry.status === "open" ? h("textarea", { name: "inputs", rows: 6 }, JSON.stringify(entry.inputs ?? {}, null, 2)) : null;
  clear(box).append(
    section(
      `entry ${entry.id}`,
      h("p", {}, [statusBadge(entry.status), ` ${entry.workflow} · step ${entry.step} · task ${entry.task} · run `, h("a", { href: `#/runs/${enc(entry.run_id)}` }, entry.run_id)]),
      h("pre", { class: "error-text" }, entry.error || ""),
      entry.traceback ? h("details", {}, [h("summary", {}, "traceback"), h("pre", { class: "traceback" }, entry.traceback)]) : null,
      inputs ? h("p", { class: "muted" }, "Inputs (edit to replay with corrected inputs):") : h("p", { class: "muted" }, "Inputs:"),
      inputs ?? json(entry.inputs),
      entry.status === "open"
        ? bar(
            action("operator", "Replay with these inputs", () => {
              const edited = parseJson(inputs.value, "inputs");
              const same = JSON.stringify(edited) === JSON.stringify(entry.inputs ?? {});
              return api("dlq/replay", { method: "POST", body: same ? { ids: [entry.id] } : { ids: [entry.id], inputs: edited } }).then(async (r) => (await load(), await show(box, id, load), r));
            }, { kind: "primary", done: () => "replayed: the run resumes" }),
          )
        : null,
    ),
  );
}

function entryActions(e, load) {
  return bar(
    action("operator", "Replay", () => api("dlq/replay", { method: "POST", body: { ids: [e.id] } }).then(async (r) => (await load(), r)), { done: () => "replayed: the run resumes" }),
    action("operator", "Discard", () => api("dlq/discard", { method: "POST", body: { ids: [e.id] } }).then(async (r) => (await load(), r)), { kind: "danger", confirm: `Discard entry ${e.id}?` }),
  );
}
