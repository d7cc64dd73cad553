// The report (GET /api/v1/report?format=json): per workflow, runs by outcome, success rate,
// durations, step durations and queue waits (p50/p95), failure rates, the critical path.

import { api } from "../api.js";
import { bars, columns, stacked } from "../charts.js";
import { clear, duration, h, section } from "../dom.js";

const pct = (v) => (v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`);
const secs = (v) => (v === null || v === undefined ? "—" : duration(v));

export async function render(main, _params, query) {
  const since = h("select", { name: "since" }, ["1d", "7d", "30d", "90d", "365d"].map((v) => h("option", { value: v }, `last ${v}`)));
  since.value = query.get("since") || "7d";
  const workflow = h("input", { name: "workflow", placeholder: "workflow (all)", value: query.get("workflow") || "" });
  const go = (event) => {
    event?.preventDefault();
    const q = new URLSearchParams({ since: since.value });
    if (workflow.value) q.set("workflow", workflow.value);
    location.hash = `#/report?${q}`;
  };
  since.addEventListener("change", go);
  const box = h("div", {});
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Report")), h("form", { class: "filters", onsubmit: go }, [since, workflow, h("button", { type: "submit" }, "Show")]), box);
  const report = await api("report", { query: { format: "json", since: since.value, workflow: workflow.value } });
  clear(box);
  if (!report.workflows?.length) return box.append(h("p", { class: "muted empty" }, "No runs in this period."));
  for (const wf of report.workflows) box.append(card(wf));
}

function card(wf) {
  const steps = wf.steps || [];
  const path = wf.critical_path || {};
  return h("article", { class: "panel report-card", "data-workflow": wf.workflow }, [
    h("h2", {}, wf.workflow),
    h("dl", { class: "facts wide" }, [
      ["runs", wf.runs],
      ["success rate", pct(wf.success_rate)],
      ["duration p50", secs(wf.duration_p50_s)],
      ["duration p95", secs(wf.duration_p95_s)],
      ["bottleneck", path.bottleneck || "—"],
    ].flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])),
    stacked([
      { label: "succeeded", value: wf.succeeded, cls: "st-succeeded" },
      { label: "failed", value: wf.failed, cls: "st-failed" },
      { label: "cancelled", value: wf.cancelled, cls: "st-cancelled" },
      { label: "active", value: wf.active, cls: "st-running" },
    ]),
    section("step durations (p50, p95)", bars(steps.map((st) => ({ label: st.step, values: [{ value: st.duration_p50_s, cls: "p50", title: "p50" }, { value: st.duration_p95_s, cls: "p95", title: "p95" }] })), { format: secs })),
    section("queue waits (p50, p95)", bars(steps.map((st) => ({ label: st.step, values: [{ value: st.queue_p50_s, cls: "p50", title: "p50" }, { value: st.queue_p95_s, cls: "p95", title: "p95" }] })), { format: secs })),
    section("failure rate and retries per run", bars(steps.map((st) => ({ label: st.step, values: [{ value: st.failure_rate, cls: "st-failed", title: "failure rate" }, { value: st.retries_per_run, cls: "retries", title: "retries per run" }] })), { format: (v) => (v === null || v === undefined ? "—" : v.toFixed(2)) })),
    path.steps?.length
      ? section(`critical path (${secs(path.duration_s)})`, stacked(path.steps.map((st, i) => ({ label: `${st.step} ${secs(st.segment_s)}`, value: Math.max(0, st.segment_s || 0), cls: `seg seg-${i % 6}`, plain: true })), { format: secs }))
      : null,
    wf.timeline?.length ? section("runs over time", columns(wf.timeline.map((b) => ({ label: String(b.bucket).slice(0, 16), value: b.runs })))) : null,
  ]);
}
