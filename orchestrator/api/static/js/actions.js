// Action buttons: shown only to a role that may use them (a viewer sees none), disabled while
// their call is in flight, with the server's one-line error as a notice when it refuses.

import { can } from "./api.js";
import { h } from "./dom.js";
import { failed, notify } from "./notice.js";

/** A button for `role` and above; null (nothing drawn) for a lower role. */
export function action(role, label, run, { confirm: question, kind = "", done } = {}) {
  if (!can(role)) return null;
  const button = h("button", { class: `action ${kind}`, type: "button", "data-action": label.toLowerCase().replace(/\s+/g, "-") }, label);
  button.addEventListener("click", async () => {
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      const result = await run();
      notify(done ? done(result) : `${label}: done`, "ok");
    } catch (error) {
      failed(error);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A row of actions; null when none is allowed. */
export function bar(...buttons) {
  const shown = buttons.filter(Boolean);
  return shown.length ? h("div", { class: "actions" }, shown) : null;
}
