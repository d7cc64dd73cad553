// The approvals inbox: every step waiting for a decision; an operator approves or rejects here.

import { api, can, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { clear, h, short, table, time } from "../dom.js";

export async function render(main) {
  const list = h("div", {});
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Approvals")), list);
  const load = async () => {
    const waiting = await api("approvals");
    clear(list).append(
      table(
        [
          { title: "run", cell: (a) => h("a", { href: `#/runs/${enc(a.run_id)}?step=${enc(a.step)}`, class: "mono" }, short(a.run_id)) },
          { title: "workflow", cell: (a) => a.workflow },
          { title: "step", cell: (a) => a.step },
          { title: "approvals", cell: (a) => `${(a.approved_by || []).length}/${a.required}` },
          { title: "approvers", cell: (a) => (a.approvers?.length ? a.approvers.join(", ") : "anyone") },
          { title: "since", cell: (a) => time(a.since) },
          { title: "deadline", cell: (a) => time(a.deadline) },
          { title: "", cell: (a) => (can("operator") ? decide(a, load) : "") },
        ],
        waiting,
        "No approval is waiting.",
      ),
    );
  };
  await load();
}

function decide(a, load) {
  const comment = h("input", { placeholder: "comment", name: "comment" });
  const keyword = a.keyword ? h("input", { placeholder: "keyword", name: "keyword", autocomplete: "off" }) : null;
  const post = (what, body) => api(`runs/${enc(a.run_id)}/steps/${enc(a.step)}/${what}`, { method: "POST", body }).then(async (r) => (await load(), r));
  return h("div", { class: "inline-form" }, [
    comment,
    keyword,
    bar(
      action("operator", "Approve", () => post("approve", { comment: comment.value || null, ...(keyword ? { keyword: keyword.value } : {}) }), { kind: "primary" }),
      action("operator", "Reject", () => {
        if (!comment.value.trim()) throw new Error("a rejection needs a comment");
        return post("reject", { comment: comment.value });
      }, { kind: "danger" }),
    ),
  ]);
}
