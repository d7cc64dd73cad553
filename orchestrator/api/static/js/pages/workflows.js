// Workflows: the registered names; one workflow's versions with their runs, a diff of two
// versions, the graph of one, and (admin) activate and rollback.

import { api, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { DagView } from "../dag.js";
import { clear, h, section, short, table, time } from "../dom.js";

export async function render(main, [name], query) {
  if (!name) return list(main);
  const versions = await api(`workflows/${enc(name)}/versions`);
  const reload = () => render(clear(main), [name], query);
  const active = versions.find((v) => v.active);
  const shown = query.get("version") || active?.version || versions[0]?.version;
  let from = versions[1]?.version;
  let to = versions[0]?.version;
  const diffBox = h("div", {});
  const graphBox = h("div", { class: "stage small" });
  const pick = (which, v) => {
    const input = h("input", { type: "radio", name: which, value: v.version, checked: (which === "from" ? from : to) === v.version });
    input.addEventListener("change", () => {
      if (which === "from") from = v.version;
      else to = v.version;
      showDiff();
    });
    return input;
  };
  main.append(
    h("div", { class: "page-head" }, [
      h("h1", {}, ["Workflow ", name]),
      bar(
        action("admin", "Roll back", () => api(`workflows/${enc(name)}/rollback`, { method: "POST", body: {} }).then(async (r) => (await reload(), r)), {
          confirm: `Roll ${name} back to the version active before?`,
          done: (r) => `active: ${short(r?.version)}`,
        }),
      ),
      h("a", { href: `#/runs?workflow=${enc(name)}` }, "its runs →"),
    ]),
    section(
      "versions",
      table(
        [
          { title: "from", cell: (v) => pick("from", v) },
          { title: "to", cell: (v) => pick("to", v) },
          { title: "version", cell: (v) => h("a", { href: `#/workflows/${enc(name)}?version=${enc(v.version)}`, class: "mono" }, v.version) },
          { title: "active", cell: (v) => (v.active ? h("span", { class: "badge st-succeeded" }, "active") : "") },
          { title: "registered", cell: (v) => `${time(v.registered_at)}${v.registered_by ? ` by ${v.registered_by}` : ""}` },
          { title: "runs", cell: (v) => v.runs },
          { title: "", cell: (v) => (v.active ? "" : bar(action("admin", "Activate", () => api(`workflows/${enc(name)}/activate`, { method: "POST", body: { version: v.version } }).then(async (r) => (await reload(), r)), { done: () => `activated ${short(v.version)}` }))) },
        ],
        versions,
      ),
    ),
    section("diff", diffBox),
    section(`graph of ${short(shown)}`, graphBox),
  );
  async function showDiff() {
    clear(diffBox);
    if (!from || !to || from === to) return diffBox.append(h("p", { class: "muted" }, "Pick two versions (from, to) to compare."));
    const found = await api(`workflows/${enc(name)}/diff`, { query: { from, to } });
    const text = found.diff || "";
    if (!text) return diffBox.append(h("p", { class: "muted" }, "The two versions are the same."));
    diffBox.append(h("pre", { class: "diff" }, text.split("\n").map((line) => h("span", { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "" }, `${line}\n`))));
  }
  await showDiff();
  if (shown) {
    const graph = await api(`workflows/${enc(name)}/graph`, { query: { version: shown } });
    new DagView(graphBox, graph, {});
  }
}

async function list(main) {
  const workflows = await api("workflows");
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Workflows")),
    table(
      [
        { title: "name", cell: (w) => h("a", { href: `#/workflows/${enc(w.name)}` }, w.name) },
        { title: "active version", cell: (w) => h("span", { class: "mono" }, w.version || "(none active)") },
        { title: "versions", cell: (w) => w.versions },
        { title: "registered", cell: (w) => time(w.registered_at) },
      ],
      workflows,
      "No workflow is registered (orchestrator workflows register FILE).",
    ),
  );
}
