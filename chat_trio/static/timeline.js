// The open room's timeline: history (newest page, then older pages on scroll), live entries in
// seq order without duplicates, resume points, sending with a txn_id until acknowledged, typing.
import { api } from "./api.js";
import { resetTyping, settle, showPendingFor, stoppedTyping } from "./composer.js";
import { $, clear, node, scrollToBottom, showError, timeLabel } from "./dom.js";
import { closeActions, messageActions } from "./edits.js";
import { isMember, refreshMembers } from "./members.js";
import * as socket from "./socket.js";
import { actions, state } from "./state.js";

const PAGE_SIZE = 50;

const el = {
  scroller: $("message-scroller"),
  loadOlder: $("load-older"),
  historyStart: $("history-start"),
  messages: $("messages"),
  jumpLatest: $("jump-latest"),
};

const tl = {
  seqs: new Set(), // seqs shown in the open room
  lastSeq: 0, // highest seq seen in the open room: the resume point
  firstSeq: null, // lowest seq shown (for "load older")
  hasOlder: false,
  loadingOlder: false,
  detached: false, // showing an older stretch (a search result), not the newest entries
};

function nearBottom() {
  const s = el.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

// -- the open room -----------------------------------------------------------------------

export function resetTimeline() {
  clear(el.messages);
  tl.seqs.clear();
  tl.lastSeq = 0;
  tl.firstSeq = null;
  tl.hasOlder = false;
  setDetached(false);
  el.loadOlder.hidden = true;
  el.historyStart.hidden = true;
  resetTyping();
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
  setDetached(false);
  for (const m of data.messages) insertMessage(m);
  setOlder(data.has_more);
  scrollToBottom();
}

function setDetached(on) {
  tl.detached = on;
  el.jumpLatest.hidden = !on;
}

// A search result: show the entry with what surrounds it, loading that stretch of history when
// it is older than what is shown (live entries then wait behind "Jump to the latest").
export async function showAround(seq) {
  const gen = state.generation;
  if (!shownEntry(seq) && (tl.firstSeq === null || seq < tl.firstSeq)) {
    const around = "&before=" + (seq + PAGE_SIZE / 2);
    const data = await api("GET", "/rooms/" + state.roomId + "/messages?limit=" + PAGE_SIZE + around);
    if (gen !== state.generation) return;
    const last = data.messages.length ? data.messages[data.messages.length - 1].seq : 0;
    clear(el.messages);
    tl.seqs.clear();
    tl.firstSeq = null;
    setDetached(last < tl.lastSeq);
    for (const m of data.messages) insertMessage(m);
    setOlder(data.has_more);
    if (!tl.detached) showPendingFor(state.roomId);
  }
  const li = shownEntry(seq);
  if (!li) return;
  for (const n of el.messages.querySelectorAll(".found")) n.classList.remove("found");
  li.classList.add("found");
  li.scrollIntoView({ block: "center" });
}

el.jumpLatest.addEventListener("click", () => refetch().catch(showError));

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
  if (gen !== state.generation) return;
  showPendingFor(state.roomId); // the reload cleared my unsent messages from the page
  subscribe();
}

// -- entries -----------------------------------------------------------------------------

const ROOM_EVENTS = new Set(["join", "leave", "kick", "ban", "room_updated"]);
const CORRECTIONS = new Set(["edit", "delete"]); // change earlier entries and are shown there

function renderMessage(m) {
  const kind = m.kind || "text";
  if (kind !== "text") {
    // A room event (or any kind this page does not know): its `text` says what happened.
    const li = node("li", "event", m.text);
    li.dataset.seq = String(m.seq);
    li.dataset.kind = kind;
    return li;
  }
  const li = node("li", "message");
  li.dataset.seq = String(m.seq);
  if (m.author) li.dataset.author = String(m.author.id);
  if (state.user && m.author && m.author.id === state.user.id) li.classList.add("mine");
  const head = node("div", "message-head");
  head.append(node("span", "author", m.author ? m.author.username : ""));
  const time = node("time", "time", timeLabel(m.created_at));
  time.dateTime = m.created_at;
  time.title = new Date(m.created_at).toLocaleString();
  head.append(time);
  if (m.edited_at) head.append(node("span", "time edited", "(edited)"));
  li.append(head, node("div", "message-text", m.text));
  if (m.deleted) markDeleted(li);
  else li.append(messageActions(li, li.classList.contains("mine")));
  return li;
}

function markDeleted(li) {
  li.classList.add("deleted");
  li.querySelector(".message-text").textContent = "message deleted";
  closeActions(li);
}

function shownEntry(seq) {
  return el.messages.querySelector('li[data-seq="' + Number(seq) + '"]');
}

// An edit, delete or erase entry changes what earlier entries show (history already shows
// them changed: this is for the live ones).
function applyCorrection(m) {
  const shown = (seq) => el.messages.querySelector('li.message[data-seq="' + Number(seq) + '"]');
  if (m.kind === "edit" && m.target_seq !== undefined) {
    const li = shown(m.target_seq);
    if (li && !li.classList.contains("deleted")) {
      li.querySelector(".message-text").textContent = m.new_text;
      const head = li.querySelector(".message-head");
      if (!head.querySelector(".edited")) head.append(node("span", "time edited", "(edited)"));
    }
  } else if (m.kind === "delete" && m.target_seq !== undefined) {
    const li = shown(m.target_seq);
    if (li) markDeleted(li);
  } else if (m.kind === "erase" && m.subject) {
    for (const li of el.messages.querySelectorAll("li.message")) {
      if (li.dataset.author === String(m.subject.id) && Number(li.dataset.seq) < m.seq) markDeleted(li);
    }
  }
}

// Put an entry in its place by seq; a seq already shown is ignored (resume may overlap).
function insertMessage(m) {
  if (m.room_id !== state.roomId || tl.seqs.has(m.seq)) return false;
  tl.seqs.add(m.seq);
  if (m.seq > tl.lastSeq) tl.lastSeq = m.seq;
  if (tl.firstSeq === null || m.seq < tl.firstSeq) tl.firstSeq = m.seq;
  if (m.kind === "erase") applyCorrection(m); // and shown, as the room's record of it
  if (CORRECTIONS.has(m.kind)) {
    applyCorrection(m);
    return false;
  }
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
  return true;
}

export function receiveMessage(m) {
  settle(m);
  if (m.room_id !== state.roomId) return;
  const author = m.author ? m.author.id : null;
  stoppedTyping(author);
  if (ROOM_EVENTS.has(m.kind)) onRoomEvent(m);
  else if (author !== null && !isMember(author)) refreshMembers(); // someone new: update the list
  if (tl.detached) {
    // an older stretch is shown: corrections still apply to it; my own entry brings me back
    if (m.seq > tl.lastSeq) tl.lastSeq = m.seq;
    if (CORRECTIONS.has(m.kind) || m.kind === "erase") applyCorrection(m);
    if (state.user && author === state.user.id && (m.kind || "text") === "text") refetch().catch(() => {});
    return;
  }
  const stick = nearBottom() || (state.user && author === state.user.id);
  if (tl.lastSeq && m.seq > tl.lastSeq + 1 && !tl.seqs.has(m.seq - 1)) {
    // The server never skips a seq on a subscription; if we still see a hole, refetch.
    refetch().catch(() => {});
    return;
  }
  if (insertMessage(m) && stick) scrollToBottom();
}

// Membership changed: re-read the members (who is in, their roles). A changed name or topic
// arrives as a `room` frame; my own removal as an `unsubscribed` frame right after this entry.
function onRoomEvent(m) {
  const aboutMe = state.user && m.subject && m.subject.id === state.user.id;
  if (!(aboutMe && ["leave", "kick", "ban"].includes(m.kind))) refreshMembers();
}

actions.received = receiveMessage;
