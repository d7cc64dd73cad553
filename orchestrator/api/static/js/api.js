// The API client: JSON over fetch with the bearer token kept in sessionStorage. A 401 asks for a
// token (once, for every caller waiting) and repeats the call with it.

const TOKEN_KEY = "orchestrator.token";
const BASE = "/api/v1";
const ROLES = ["viewer", "operator", "admin"];

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let prompting = null;
let me = null;

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function headers(extra = {}) {
  const found = { Accept: "application/json", ...extra };
  const t = token();
  if (t) found.Authorization = `Bearer ${t}`;
  return found;
}

/** Ask for a token in the dialog; resolves once one is entered. */
export function askToken(message) {
  if (prompting) return prompting;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.hidden = !message;
  error.textContent = message || "";
  input.value = "";
  prompting = new Promise((resolve) => {
    const done = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      form.removeEventListener("submit", done);
      dialog.close();
      prompting = null;
      me = null;
      resolve(value);
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return prompting;
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") return body.error;
    if (body && typeof body.detail === "string") return body.detail;
    if (body && body.detail) return JSON.stringify(body.detail);
  } catch {
    /* not JSON: the status line says it */
  }
  return `${response.status} ${response.statusText}`;
}

/** Call the API; the parsed JSON answer, or an ApiError carrying the server's one-line error. */
export async function api(path, { method = "GET", body, query } = {}) {
  let url = path.startsWith("/") ? path : `${BASE}/${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const text = params.toString();
    if (text) url += (url.includes("?") ? "&" : "?") + text;
  }
  for (let tries = 0; ; tries++) {
    // every write says JSON, even with no body: the server refuses one that does not (415)
    const write = method !== "GET" && method !== "HEAD";
    const init = { method, headers: headers(write || body !== undefined ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(url, init);
    if (response.status === 401 && tries < 5) {
      const message = await errorOf(response);
      await askToken(token() ? `That token was refused: ${message}` : "");
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorOf(response));
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response.text();
  }
}

/** Who the token is: {name, role}; cached until the token changes. */
export async function whoami() {
  if (!me) me = await api("me");
  return me;
}

export function can(role) {
  if (!me) return false;
  return ROLES.indexOf(me.role) >= ROLES.indexOf(role);
}

export const enc = encodeURIComponent;
