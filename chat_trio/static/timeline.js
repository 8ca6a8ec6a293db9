// The open room's timeline: history (newest page, then older pages on scroll), live entries in
// seq order without duplicates, resume points, sending with a txn_id until acknowledged, typing.
import { api, ApiError } from "./api.js";
import { $, clear, node, timeLabel } from "./dom.js";
import { isMember, refreshMembers } from "./members.js";
import * as socket from "./socket.js";
import { state } from "./state.js";

const PAGE_SIZE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;

const el = {
  scroller: $("message-scroller"),
  loadOlder: $("load-older"),
  historyStart: $("history-start"),
  messages: $("messages"),
  typing: $("typing"),
  composer: $("composer"),
  input: $("message-input"),
  sendError: $("send-error"),
};

const tl = {
  seqs: new Set(), // seqs shown in the open room
  lastSeq: 0, // highest seq seen in the open room: the resume point
  firstSeq: null, // lowest seq shown (for "load older")
  hasOlder: false,
  loadingOlder: false,
  pending: new Map(), // txn_id → {roomId, text, node, failed}
  typers: new Map(), // user id → {name, until}
  lastTypingSent: 0,
};

let typingTimer = null;

function nearBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToBottom() {
  el.scroller.scrollTop = el.scroller.scrollHeight;
}

function txnId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function showError(err) {
  el.sendError.textContent = err && err.message ? err.message : "Something went wrong.";
}

// -- the open room -----------------------------------------------------------------------

export function resetTimeline() {
  clear(el.messages);
  tl.seqs.clear();
  tl.lastSeq = 0;
  tl.firstSeq = null;
  tl.hasOlder = false;
  el.loadOlder.hidden = true;
  el.historyStart.hidden = true;
  tl.typers.clear();
  renderTyping();
}

export function forgetPending() {
  tl.pending.clear();
}

export function subscribe() {
  if (state.roomId === null) return;
  socket.send({ type: "subscribe", room_id: state.roomId, after: tl.lastSeq });
}

// After the room is open: its newest page, then live entries from there, then my unsent ones.
export async function startTimeline(gen) {
  await loadNewest(gen);
  if (gen !== state.generation) return false;
  subscribe();
  showPendingFor(state.roomId);
  return true;
}

// -- history -----------------------------------------------------------------------------

async function loadNewest(gen) {
  const data = await api("GET", "/rooms/" + state.roomId + "/messages?limit=" + PAGE_SIZE);
  if (gen !== state.generation) return;
  clear(el.messages);
  tl.seqs.clear();
  tl.lastSeq = 0;
  tl.firstSeq = null;
  for (const m of data.messages) insertMessage(m);
  setOlder(data.has_more);
  scrollToBottom();
}

function setOlder(hasMore) {
  tl.hasOlder = hasMore;
  el.loadOlder.hidden = !hasMore;
  el.historyStart.hidden = hasMore || state.roomId === null;
}

async function loadOlder() {
  if (!tl.hasOlder || tl.loadingOlder || tl.firstSeq === null) return;
  const gen = state.generation;
  tl.loadingOlder = true;
  el.loadOlder.disabled = true;
  try {
    const data = await api("GET", "/rooms/" + state.roomId + "/messages?limit=" + PAGE_SIZE + "&before=" + tl.firstSeq);
    if (gen !== state.generation) return;
    const before = el.scroller.scrollHeight;
    const top = el.scroller.scrollTop;
    for (const m of data.messages) insertMessage(m);
    el.scroller.scrollTop = top + (el.scroller.scrollHeight - before); // keep the view still
    setOlder(data.has_more);
  } catch (err) {
    showError(err);
  } finally {
    tl.loadingOlder = false;
    el.loadOlder.disabled = false;
  }
}

el.loadOlder.addEventListener("click", loadOlder);
el.scroller.addEventListener("scroll", () => {
  if (el.scroller.scrollTop < 40 && tl.hasOlder) loadOlder();
});

// Catch up over REST from the resume point, e.g. after a `gap` frame or a seq jump.
export async function refetch() {
  const gen = state.generation;
  await loadNewest(gen);
  if (gen === state.generation) subscribe();
}

// -- entries -----------------------------------------------------------------------------

function renderMessage(m) {
  const li = node("li", "message");
  li.dataset.seq = String(m.seq);
  if (state.user && m.author.id === state.user.id) li.classList.add("mine");
  const head = node("div", "message-head");
  head.append(node("span", "author", m.author.username));
  const time = node("time", "time", timeLabel(m.created_at));
  time.dateTime = m.created_at;
  time.title = new Date(m.created_at).toLocaleString();
  head.append(time);
  li.append(head, node("div", "message-text", m.text));
  return li;
}

// Put an entry in its place by seq; a seq already shown is ignored (resume may overlap).
function insertMessage(m) {
  if (m.room_id !== state.roomId || tl.seqs.has(m.seq)) return false;
  tl.seqs.add(m.seq);
  const li = renderMessage(m);
  let after = null;
  for (let n = el.messages.lastElementChild; n; n = n.previousElementSibling) {
    if (n.dataset.seq && Number(n.dataset.seq) < m.seq) {
      after = n;
      break;
    }
  }
  if (after) after.after(li);
  else el.messages.prepend(li);
  // pending (unsent) messages stay at the very end
  for (const p of el.messages.querySelectorAll(".pending")) el.messages.append(p);
  if (m.seq > tl.lastSeq) tl.lastSeq = m.seq;
  if (tl.firstSeq === null || m.seq < tl.firstSeq) tl.firstSeq = m.seq;
  return true;
}

export function receiveMessage(m) {
  if (m.txn_id && tl.pending.has(m.txn_id) && state.user && m.author.id === state.user.id) {
    const p = tl.pending.get(m.txn_id);
    tl.pending.delete(m.txn_id);
    if (p.node) p.node.remove();
  }
  if (m.room_id !== state.roomId) return;
  if (tl.typers.delete(m.author.id)) renderTyping();
  if (!isMember(m.author.id)) refreshMembers(); // someone new: update the list
  const stick = nearBottom() || (state.user && m.author.id === state.user.id);
  if (tl.lastSeq && m.seq > tl.lastSeq + 1 && !tl.seqs.has(m.seq - 1)) {
    // The server never skips a seq on a subscription; if we still see a hole, refetch.
    refetch().catch(() => {});
    return;
  }
  if (insertMessage(m) && stick) scrollToBottom();
}

// -- sending -----------------------------------------------------------------------------

el.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = el.input.value;
  if (!text.trim() || state.roomId === null) return;
  el.input.value = "";
  el.sendError.textContent = "";
  const entry = { txn: txnId(), roomId: state.roomId, text, node: null, failed: false };
  tl.pending.set(entry.txn, entry);
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
  if (now - tl.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  tl.lastTypingSent = now;
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
      tl.pending.delete(entry.txn);
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

function showPendingFor(roomId) {
  for (const entry of tl.pending.values()) {
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
    receiveMessage(data.message);
  } catch (err) {
    if (err instanceof ApiError) failSend(entry, err.message);
    // a network error leaves it pending: the next websocket hello sends it again
  }
}

export function resendPending() {
  for (const entry of tl.pending.values()) trySend(entry);
}

function failSend(entry, message) {
  entry.failed = true;
  el.sendError.textContent = "Message not sent: " + message;
  redrawPending(entry);
}

// A websocket `error` frame: if it answers one of my sends, retry later or mark it failed.
export function sendRefused(frame) {
  const entry = typeof frame.ref === "string" ? tl.pending.get(frame.ref) : undefined;
  if (!entry) return;
  if (frame.code === "rate_limited") setTimeout(() => trySend(entry), 1000);
  else failSend(entry, frame.message || frame.code);
}

// -- typing ------------------------------------------------------------------------------

export function someoneTyping(frame) {
  if (frame.room_id !== state.roomId || !frame.user || (state.user && frame.user.id === state.user.id)) return;
  tl.typers.set(frame.user.id, { name: frame.user.username, until: Date.now() + TYPING_SHOW_MS });
  renderTyping();
}

function renderTyping() {
  const now = Date.now();
  for (const [id, t] of tl.typers) if (t.until <= now) tl.typers.delete(id);
  const names = Array.from(tl.typers.values(), (t) => t.name);
  let text = "";
  if (names.length === 1) text = names[0] + " is typing…";
  else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
  else if (names.length > 2) text = "Several people are typing…";
  el.typing.textContent = text;
  clearTimeout(typingTimer);
  if (names.length) typingTimer = setTimeout(renderTyping, 1000);
}
