// The audit trail, filtered by run, actor, action and age; and a check of its hash chain.

import { api, enc } from "../api.js";
import { clear, h, json, short, table, time } from "../dom.js";

export async function render(main, _params, query) {
  const fields = ["run", "actor", "action", "since"].map((name) =>
    h("input", { name, placeholder: name === "since" ? "since (e.g. 7d)" : name, value: query.get(name) || "" }),
  );
  const go = (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    for (const f of fields) if (f.value) q.set(f.name, f.value);
    location.hash = `#/audit${q.toString() ? `?${q}` : ""}`;
  };
  const verdict = h("span", { class: "verdict" });
  const verify = h("button", { type: "button" }, "Verify the chain");
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    try {
      const found = await api("audit/verify");
      verdict.className = `verdict ${found.ok === false ? "bad" : "good"}`;
      verdict.textContent = found.ok === false ? `broken at #${found.bad_seq}: ${found.problem}` : `intact (${found.records} records)${found.needs_key ? ", needs ORCHESTRATOR_AUDIT_KEY to check" : ""}`;
    } catch (error) {
      verdict.className = "verdict bad";
      verdict.textContent = error.message;
    } finally {
      verify.disabled = false;
    }
  });
  const box = h("div", {});
  main.append(
    h("div", { class: "page-head" }, [h("h1", {}, "Audit"), verify, verdict]),
    h("form", { class: "filters", onsubmit: go }, [...fields, h("button", { type: "submit" }, "Filter")]),
    box,
  );
  const q = Object.fromEntries(fields.filter((f) => f.value).map((f) => [f.name, f.value]));
  const records = await api("audit", { query: { ...q, limit: 500 } });
  clear(box).append(
    table(
      [
        { title: "#", cell: (r) => r.seq },
        { title: "at", cell: (r) => time(r.at) },
        { title: "actor", cell: (r) => r.actor },
        { title: "action", cell: (r) => r.action },
        { title: "target", cell: (r) => (String(r.target).startsWith("run:") ? h("a", { href: `#/runs/${enc(String(r.target).slice(4))}` }, r.target) : r.target) },
        { title: "reason", cell: (r) => r.reason || "" },
        { title: "detail", cell: (r) => (r.detail ? h("details", {}, [h("summary", {}, "detail"), json(r.detail)]) : "") },
        { title: "hash", cell: (r) => h("code", {}, short(r.hash)) },
      ],
      records,
      "No audit records.",
    ),
  );
}
