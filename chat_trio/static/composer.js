// The composer: sending with a txn_id until the server acknowledges it (over the websocket
// when it is up, else REST; unsent messages survive reconnects and room switches), and typing:
// mine to the room, others' under the timeline.
import { api, ApiError } from "./api.js";
import { $, node, scrollToBottom } from "./dom.js";
import * as socket from "./socket.js";
import { actions, state } from "./state.js";

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;

const el = {
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("message-input"),
  sendError: $("send-error"),
};

const pending = new Map(); // txn_id → {roomId, text, node, failed}
const typers = new Map(); // user id → {name, until}
let lastTypingSent = 0;
let typingTimer = null;

export function txnId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function forgetPending() {
  pending.clear();
}

// A committed entry of mine may be the answer to a pending send: it replaces it.
export function settle(m) {
  if (!m.txn_id || !pending.has(m.txn_id) || !state.user || !m.author || m.author.id !== state.user.id) return;
  const p = pending.get(m.txn_id);
  pending.delete(m.txn_id);
  if (p.node) p.node.remove();
}

// -- sending -----------------------------------------------------------------------------

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = el.input.value;
  if (!text.trim() || state.roomId === null) return;
  el.input.value = "";
  el.sendError.textContent = "";
  const entry = { txn: txnId(), roomId: state.roomId, text, node: null, failed: false };
  pending.set(entry.txn, entry);
  renderPending(entry);
  scrollToBottom();
  trySend(entry);
});

el.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    el.composer.requestSubmit();
  }
});

el.input.addEventListener("input", () => {
  const now = Date.now();
  if (!el.input.value || state.roomId === null || !socket.isReady()) return;
  if (now - lastTypingSent < TYPING_SEND_EVERY_MS) return;
  lastTypingSent = now;
  socket.send({ type: "typing", room_id: state.roomId });
});

function renderPending(entry) {
  if (entry.roomId !== state.roomId) return;
  const li = node("li", "message mine pending");
  const head = node("div", "message-head");
  head.append(node("span", "author", state.user ? state.user.username : ""));
  head.append(node("span", "time", entry.failed ? "not sent" : "sending…"));
  li.append(head, node("div", "message-text", entry.text));
  if (entry.failed) {
    li.classList.add("failed");
    const retry = node("button", "link", "Retry");
    retry.type = "button";
    retry.addEventListener("click", () => {
      entry.failed = false;
      redrawPending(entry);
      trySend(entry);
    });
    const discard = node("button", "link", "Discard");
    discard.type = "button";
    discard.addEventListener("click", () => {
      pending.delete(entry.txn);
      li.remove();
    });
    const actionsRow = node("div", "pending-actions");
    actionsRow.append(retry, discard);
    li.append(actionsRow);
  }
  if (entry.node) entry.node.replaceWith(li);
  else el.messages.append(li);
  entry.node = li;
}

function redrawPending(entry) {
  if (entry.node && entry.node.isConnected) renderPending(entry);
}

export function showPendingFor(roomId) {
  for (const entry of pending.values()) {
    if (entry.roomId === roomId) {
      entry.node = null;
      renderPending(entry);
    }
  }
}

// Send over the websocket when it is up, else over REST. Either way the txn_id makes a
// repeat harmless; unacknowledged websocket sends are repeated after a reconnect.
async function trySend(entry) {
  if (entry.failed) return;
  if (socket.isReady()) {
    socket.send({ type: "send", room_id: entry.roomId, text: entry.text, txn_id: entry.txn, ref: entry.txn });
    return;
  }
  try {
    const data = await api("POST", "/rooms/" + entry.roomId + "/messages", { text: entry.text, txn_id: entry.txn });
    actions.received(data.message);
  } catch (err) {
    if (err instanceof ApiError) failSend(entry, err.message);
    // a network error leaves it pending: the next websocket hello sends it again
  }
}

export function resendPending() {
  for (const entry of pending.values()) trySend(entry);
}

function failSend(entry, message) {
  entry.failed = true;
  el.sendError.textContent = "Message not sent: " + message;
  redrawPending(entry);
}

// A websocket `error` frame: if it answers one of my sends, retry later or mark it failed.
export function sendRefused(frame) {
  const entry = typeof frame.ref === "string" ? pending.get(frame.ref) : undefined;
  if (!entry) return;
  if (frame.code === "rate_limited") setTimeout(() => trySend(entry), 1000);
  else failSend(entry, frame.message || frame.code);
}

// -- typing ------------------------------------------------------------------------------

export function resetTyping() {
  typers.clear();
  renderTyping();
}

export function stoppedTyping(userId) {
  if (typers.delete(userId)) renderTyping();
}

export function someoneTyping(frame) {
  if (frame.room_id !== state.roomId || !frame.user || (state.user && frame.user.id === state.user.id)) return;
  typers.set(frame.user.id, { name: frame.user.username, until: Date.now() + TYPING_SHOW_MS });
  renderTyping();
}

function renderTyping() {
  const now = Date.now();
  for (const [id, t] of typers) if (t.until <= now) typers.delete(id);
  const names = Array.from(typers.values(), (t) => t.name);
  let text = "";
  if (names.length === 1) text = names[0] + " is typing…";
  else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
  else if (names.length > 2) text = "Several people are typing…";
  el.typing.textContent = text;
  clearTimeout(typingTimer);
  if (names.length) typingTimer = setTimeout(renderTyping, 1000);
}
