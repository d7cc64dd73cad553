// Notices at the top of the page: errors stay until the next notice, others fade.

import { ApiError } from "./api.js";

let timer = null;

export function notify(message, kind = "info") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = false;
  clearTimeout(timer);
  if (kind !== "error") timer = setTimeout(() => (box.hidden = true), 4000);
}

export function failed(error) {
  notify(error instanceof ApiError ? error.message : `Error: ${error.message || error}`, "error");
}
