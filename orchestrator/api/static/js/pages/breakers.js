// Circuit breakers and their state; reset for an admin.

import { api, enc } from "../api.js";
import { action, bar } from "../actions.js";
import { clear, h, table, time } from "../dom.js";

export async function render(main) {
  const box = h("div", {});
  main.append(h("div", { class: "page-head" }, h("h1", {}, "Breakers")), box);
  const load = async () => {
    const found = await api("breakers");
    clear(box).append(
      table(
        [
          { title: "name", cell: (b) => b.name },
          { title: "state", cell: (b) => h("span", { class: `badge br-${String(b.state).replace(/[^a-z_]/g, "")}` }, b.state) },
          { title: "failures", cell: (b) => b.failures },
          { title: "opened", cell: (b) => time(b.opened_at) },
          { title: "next trial", cell: (b) => time(b.next_trial_at) },
          { title: "", cell: (b) => bar(b.state !== "closed" ? action("admin", "Reset", () => api(`breakers/${enc(b.name)}/reset`, { method: "POST", body: {} }).then(async (r) => (await load(), r))) : null) },
        ],
        found,
        "No breakers.",
      ),
    );
  };
  await load();
}
