// The step drawer: a step's inputs, output, attempts, error and traceback (the step route), a
// foreach's items paged, a sub-workflow's child runs, and the step's actions by role.

import { api, can, enc } from "./api.js";
import { action, bar } from "./actions.js";
import { between, clear, duration, h, json, section, statusBadge, table, time } from "./dom.js";

const PAGE = 50;

export class Drawer {
  constructor(parent, { onClose, onChanged } = {}) {
    this.onClose = onClose;
    this.onChanged = onChanged;
    this.el = h("aside", { class: "drawer", hidden: true, "aria-label": "step" });
    parent.append(this.el);
    this.step = null;
    this.offset = 0;
  }

  close() {
    this.el.hidden = true;
    this.step = null;
    this.onClose?.();
  }

  async open(runId, step, run) {
    this.runId = runId;
    if (this.step !== step) {
      this.offset = 0;
      clear(this.el);
    }
    this.step = step;
    this.run = run;
    this.el.hidden = false;
    await this.load();
  }

  async refresh(run) {
    if (this.step && !this.el.hidden) {
      this.run = run;
      await this.load();
    }
  }

  async load() {
    const step = this.step;
    let view;
    try {
      view = await api(`runs/${enc(this.runId)}/steps/${enc(step)}`, { query: { items_offset: this.offset, items_limit: PAGE } });
    } catch (error) {
      if (step !== this.step) return;
      clear(this.el).append(this.head(step, null), h("p", { class: "error" }, error.message));
      return;
    }
    if (step !== this.step) return;
    // a live refresh keeps what is being typed (a comment, an output) and where
    const keepScroll = this.el.scrollTop;
    const typed = new Map([...this.el.querySelectorAll("input[name], textarea[name]")].map((f) => [f.name, f.value]));
    const focused = this.el.contains(document.activeElement) ? document.activeElement.name : null;
    clear(this.el).append(...this.body(step, view));
    for (const field of this.el.querySelectorAll("input[name], textarea[name]")) {
      if (typed.has(field.name)) field.value = typed.get(field.name);
      if (focused && field.name === focused) field.focus();
    }
    this.el.scrollTop = keepScroll;
  }

  head(step, view) {
    return h("div", { class: "drawer-head" }, [
      h("h2", {}, [step, " ", view ? statusBadge(view.status) : null]),
      h("button", { class: "link close", type: "button", "aria-label": "close", onclick: () => this.close() }, "✕"),
    ]);
  }

  body(step, view) {
    const parts = [this.head(step, view)];
    const facts = [
      ["attempts", view.attempts],
      ["started", time(view.started_at)],
      ["finished", time(view.finished_at)],
      ["took", duration(between(view.started_at, view.finished_at))],
    ];
    if (view.cached) facts.push(["cached", "yes"]);
    if (view.reason) facts.push(["reason", view.reason]);
    parts.push(h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? "—"))])));
    const child = view.child_run || this.run?.steps?.[step]?.child_run;
    if (child) parts.push(h("p", {}, ["child run: ", h("a", { href: `#/runs/${enc(child)}`, class: "child-run" }, child)]));
    const children = view.child_runs || this.run?.steps?.[step]?.child_runs;
    if (children && Object.keys(children).length) {
      parts.push(
        section(
          "child runs",
          h("ul", { class: "children" }, Object.entries(children).slice(0, 200).map(([i, id]) => h("li", {}, [`#${i} `, h("a", { href: `#/runs/${enc(id)}` }, id)]))),
        ),
      );
    }
    if (view.waiting_for) parts.push(section("waiting for", waitingFor(view.waiting_for)));
    const actions = this.actions(step, view);
    if (actions) parts.push(actions);
    if (view.error) parts.push(section("error", h("pre", { class: "error-text" }, view.error)));
    if (view.traceback) parts.push(section("traceback", h("pre", { class: "traceback" }, view.traceback)));
    if (view.inputs !== undefined) parts.push(section("inputs", json(view.inputs)));
    if (view.output !== undefined && view.output !== null) parts.push(section("output", json(view.output)));
    if (view.items) parts.push(this.items(view));
    if (view.attempt_log?.length) {
      parts.push(
        section(
          "attempts",
          table(
            [
              { title: "#", cell: (a) => a.number },
              { title: "status", cell: (a) => statusBadge(a.status) },
              { title: "worker", cell: (a) => a.worker || "—" },
              { title: "started", cell: (a) => time(a.started_at) },
              { title: "took", cell: (a) => duration(between(a.started_at, a.finished_at)) },
              { title: "error", cell: (a) => a.error || "" },
            ],
            view.attempt_log,
          ),
        ),
      );
    }
    return parts;
  }

  items(view) {
    const total = view.items.total || 0;
    const counts = Object.entries(view.items).filter(([k]) => k !== "total").map(([k, v]) => `${v} ${k}`).join(" · ");
    const list = view.item_list || [];
    const pager = h("div", { class: "pager" }, [
      h("button", { type: "button", disabled: this.offset <= 0, onclick: () => this.page(-PAGE) }, "‹ previous"),
      h("span", {}, total ? ` ${this.offset + 1}–${Math.min(total, this.offset + list.length)} of ${total} ` : " none "),
      h("button", { type: "button", disabled: this.offset + PAGE >= total, onclick: () => this.page(PAGE) }, "next ›"),
    ]);
    return section(
      `items (${total})`,
      h("p", { class: "muted" }, counts),
      pager,
      table(
        [
          { title: "index", cell: (i) => i.index },
          { title: "status", cell: (i) => statusBadge(i.status) },
          { title: "attempts", cell: (i) => i.attempts },
          { title: "output / error", cell: (i) => (i.error ? h("span", { class: "error-text" }, i.error) : h("code", {}, JSON.stringify(i.output ?? null).slice(0, 120))) },
          { title: "child", cell: (i) => (i.child_run ? h("a", { href: `#/runs/${enc(i.child_run)}` }, "run ↗") : "") },
        ],
        list,
      ),
    );
  }

  page(delta) {
    this.offset = Math.max(0, this.offset + delta);
    this.load();
  }

  post(path, body) {
    return api(`runs/${enc(this.runId)}/${path}`, { method: "POST", body }).then((result) => {
      this.onChanged?.();
      return result;
    });
  }

  actions(step, view) {
    if (!can("operator")) return null;
    const runStatus = this.run?.status;
    const stepPath = `steps/${enc(step)}`;
    const ended = ["succeeded", "failed", "cancelled"].includes(runStatus);
    const parts = [];
    const approval = view.waiting_for?.approval;
    if (view.status === "waiting" && approval) parts.push(this.decision(step, approval));
    const open = view.status === "failed" || view.status === "waiting";
    const buttons = bar(
      ended && runStatus !== "succeeded" ? action("operator", "Retry from here", () => this.post("retry", { from: step })) : null,
      ended && view.status !== "succeeded" && runStatus !== "succeeded" ? action("operator", "Retry step", () => this.post("retry", { step })) : null,
      open ? action("operator", "Skip", () => this.post(`${stepPath}/skip`, {}), { confirm: `Skip ${step}?` }) : null,
    );
    if (buttons) parts.push(buttons);
    if (open) parts.push(this.acceptForm(step, stepPath));
    return parts.length ? section("actions", ...parts) : null;
  }

  decision(step, approval) {
    const comment = h("textarea", { name: "comment", rows: 2, placeholder: "comment" });
    const keyword = approval.keyword ? h("input", { name: "keyword", placeholder: "keyword, exactly", autocomplete: "off" }) : null;
    const data = h("textarea", { name: "data", rows: 2, placeholder: "data (JSON, optional)" });
    const send = (decision) => async () => {
      const body = { comment: comment.value || null };
      if (decision === "approve") {
        if (keyword) body.keyword = keyword.value;
        if (data.value.trim()) body.data = parseJson(data.value, "data");
      } else if (!comment.value.trim()) throw new Error("a rejection needs a comment");
      const result = await this.post(`steps/${enc(step)}/${decision}`, body);
      return result;
    };
    return h("div", { class: "decision" }, [
      h("h3", {}, "decide"),
      comment,
      keyword,
      data,
      bar(
        action("operator", "Approve", send("approve"), { kind: "primary", done: (r) => (r?.ended ? "approved: the step succeeded" : "approval recorded") }),
        action("operator", "Reject", send("reject"), { kind: "danger", done: () => "rejected" }),
      ),
    ]);
  }

  acceptForm(step, stepPath) {
    const output = h("textarea", { name: "output", rows: 3, placeholder: "output JSON, e.g. {\"ok\": true}" });
    return h("div", { class: "accept" }, [
      output,
      bar(action("operator", "Accept", () => this.post(`${stepPath}/accept`, { output: parseJson(output.value, "output") }), { done: () => `${step} accepted` })),
    ]);
  }
}

/** What a waiting step waits for, as facts: an approval's quorum, an event and key, a timer. */
function waitingFor(w) {
  const facts = [];
  if (w.approval) {
    const a = w.approval;
    facts.push(["approvals", `${(a.approved_by || []).length}/${a.required ?? 1}${a.approved_by?.length ? ` (${a.approved_by.join(", ")})` : ""}`]);
    facts.push(["approvers", a.approvers?.length ? a.approvers.join(", ") : "anyone"]);
    if (a.keyword) facts.push(["keyword", "must be quoted exactly"]);
    if (a.since) facts.push(["since", time(a.since)]);
    facts.push(["deadline", a.deadline ? time(a.deadline) : "none"]);
  } else if (w.event !== undefined) {
    facts.push(["event", w.event], ["key", w.key ?? "—"], ["deadline", w.deadline ? time(w.deadline) : "none"]);
  } else if (w.timer !== undefined) facts.push(["until", time(w.timer)]);
  else if (w.child_run) facts.push(["child run", h("a", { href: `#/runs/${encodeURIComponent(w.child_run)}` }, w.child_run)]);
  else if (w.retry_at !== undefined) facts.push(["retry at", time(w.retry_at)]);
  else return json(w);
  return h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not JSON: ${error.message}`);
  }
}

