// Schedules with their next fire times; pause, resume and trigger for an admin.

import { api, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { clear, h, short, statusBadge, table, time } from "../dom.js";

export async function render(main) {
  const box = h("div", {});
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Schedules")), box);
  const load = async () => {
    const found = await api("schedules");
    const post = (s, what) => api(`schedules/${enc(s.workflow)}/${enc(s.schedule)}/${what}`, { method: "POST", body: {} }).then(async (r) => (await load(), r));
    clear(box).append(
      table(
        [
          { title: "schedule", cell: (s) => s.name },
          { title: "when", cell: (s) => h("code", {}, s.spec) },
          { title: "timezone", cell: (s) => s.timezone },
          { title: "next", cell: (s) => (s.paused ? h("span", { class: "badge st-paused" }, `paused${s.paused_by ? ` by ${s.paused_by}` : ""}`) : h("ul", { class: "next-times" }, (s.next || []).slice(0, 3).map((t) => h("li", {}, time(t))))) },
          { title: "last run", cell: (s) => (s.last_run ? [h("a", { href: `#/runs/${enc(s.last_run.run_id)}`, class: "mono" }, short(s.last_run.run_id)), " ", statusBadge(s.last_run.status)] : "—") },
          { title: "", cell: (s) => [s.warning ? h("p", { class: "error-text" }, s.warning) : null, bar(
            s.paused ? action("admin", "Resume", () => post(s, "resume")) : action("admin", "Pause", () => post(s, "pause")),
            action("admin", "Trigger", () => post(s, "trigger"), { done: (r) => `started run ${short(r?.run_id)}` }),
          )] },
        ],
        found,
        "No schedules.",
      ),
    );
  };
  await load();
}
