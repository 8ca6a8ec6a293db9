// REST: the session token (kept in this tab's sessionStorage only), calls, errors, paging.

const TOKEN_KEY = "chat_trio.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let token = null;
let onUnauthorized = () => {};

export function getToken() {
  return token;
}

// Called when a call made with a token answers 401: the session ended elsewhere.
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

export function storeToken(value) {
  token = value;
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch (_) {
    // storage may be unavailable (private mode); the token then lives in memory only
  }
}

export function savedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) {
    return null;
  }
}

async function call(method, path, body) {
  const headers = {};
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// A call whose answer is a file to save, not JSON to read (e.g. GET /me/export).
export async function download(path) {
  const response = await call("GET", path);
  if (!response.ok) return fail(response);
  return response.blob();
}

export async function api(method, path, body) {
  const response = await call(method, path, body);
  if (response.status === 204) return null;
  if (!response.ok) return fail(response);
  return response.json().catch(() => null);
}

async function fail(response) {
  const data = await response.json().catch(() => null);
  const err = (data && data.error) || {};
  // A wrong password (login, password change, account deletion) is not a dead session.
  if (response.status === 401 && token && err.code !== "invalid_credentials") {
    onUnauthorized("Your session ended. Please sign in again.");
  }
  throw new ApiError(response.status, err.code || "error", err.message || response.statusText || "request failed");
}

// Every item of a paged list (`after` = the last item's id), e.g. listAll("/rooms", "rooms", 500).
export async function listAll(path, key, pageSize, query) {
  const items = [];
  let after = 0;
  for (;;) {
    const page = await api("GET", path + "?limit=" + pageSize + "&after=" + after + (query || ""));
    items.push(...page[key]);
    if (!page.has_more || !page[key].length) return items;
    after = page[key][page[key].length - 1].id;
  }
}

export function describe(err, fallback) {
  if (!(err instanceof ApiError)) return "Cannot reach the server. Check your connection and try again.";
  if (err.code === "invalid_credentials") return "Wrong username or password.";
  if (err.code === "username_taken") return "That username is taken. Pick another or log in.";
  if (err.code === "rate_limited") return "Too many attempts. Wait a moment and try again.";
  if (err.code === "deactivated") return "This account has been closed.";
  if (err.code === "registration_closed") return "Registration is closed here: ask an admin for an account.";
  return err.message || fallback || "Request failed.";
}
