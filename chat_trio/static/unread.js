// Unread badges. Every room I am in is subscribed on the websocket (the open one by the
// timeline), so each committed entry updates its room's count as it arrives; the open room is
// marked read while the page shows it; a `read` frame (my other device read it) clears it here.
// Counts start from the room list (`unread`, `read_seq`, `last_seq`) and only entries past a
// room's `last_seq` are counted, so a resume that repeats entries counts nothing twice.
import { api } from "./api.js";
import { $ } from "./dom.js";
import { renderRooms } from "./rooms.js";
import * as socket from "./socket.js";
import { actions, state } from "./state.js";

const SUBSCRIBE_BATCH = 40; // subscriptions sent at once: under the server's inbound frame limit
const SUBSCRIBE_GAP_MS = 1000;
const RECOUNT_AGAIN_MS = 250; // with --workers, the REST answer may come from a worker a little behind

const subscribed = new Set(); // rooms subscribed on this socket by this module
let queue = [];
let draining = false;
const marking = new Set(); // rooms with a PUT .../read on its way
const recounting = new Set(); // rooms whose object is being read again

// A new socket starts with no subscriptions.
export function socketOpened() {
  subscribed.clear();
  queue = [];
}

// Subscribe every room I am in that is not yet subscribed, from the last entry counted.
export function subscribeAll() {
  if (!socket.isReady()) return;
  for (const id of state.joined) {
    if (id === state.roomId || subscribed.has(id)) continue;
    subscribed.add(id);
    queue.push(id);
  }
  drain();
}

function drain() {
  if (draining) return;
  for (const id of queue.splice(0, SUBSCRIBE_BATCH)) {
    const room = state.rooms.get(id);
    if (room && state.joined.has(id)) socket.send({ type: "subscribe", room_id: id, after: room.last_seq || 0 });
  }
  if (!queue.length) return;
  draining = true;
  setTimeout(() => {
    draining = false;
    drain();
  }, SUBSCRIBE_GAP_MS);
}

// The room list changed (read, a room joined or left, a room frame): keep up with it.
actions.roomsChanged = () => {
  for (const id of subscribed) if (!state.joined.has(id)) subscribed.delete(id);
  subscribeAll();
  markRead();
};

// The server ended a subscription (I left, or was removed).
export function unsubscribed(roomId) {
  subscribed.delete(roomId);
}

// A committed entry of any room I am in (a `message` or `ack` frame).
export function entry(m) {
  const room = state.rooms.get(m.room_id);
  if (!room || !state.joined.has(m.room_id) || m.seq <= (room.last_seq || 0)) return;
  room.last_seq = m.seq;
  const kind = m.kind || "text";
  if (state.user && m.author && m.author.id === state.user.id) {
    room.read_seq = m.seq; // whatever I do moves my marker to it
    room.unread = 0;
  } else if (kind === "text" && !m.deleted) {
    room.unread = (room.unread || 0) + 1;
  } else if ((kind === "delete" && m.target_seq > (room.read_seq || 0)) || kind === "erase") {
    recount(room.id); // it may have taken an unread message away: ask the server
    return;
  } else {
    return;
  }
  changed();
}

// A `read` frame: my marker moved on another device.
export function read(frame) {
  const room = state.rooms.get(frame.room_id);
  if (!room || frame.read_seq <= (room.read_seq || 0)) return;
  room.read_seq = frame.read_seq;
  if (frame.read_seq >= (room.last_seq || 0)) {
    room.unread = 0;
    changed();
  } else {
    recount(room.id);
  }
}

// A `gap` frame for a room that is not open: its count is read again.
export function recount(roomId) {
  if (recounting.has(roomId)) return;
  recounting.add(roomId);
  api("GET", "/rooms/" + roomId)
    .then((data) => {
      const room = state.rooms.get(roomId);
      if (!room || !data || !data.room || !state.joined.has(roomId)) return;
      if (data.room.last_seq < (room.last_seq || 0)) {
        setTimeout(() => recount(roomId), RECOUNT_AGAIN_MS); // an answer older than what I counted
        return;
      }
      Object.assign(room, { last_seq: data.room.last_seq, read_seq: data.room.read_seq, unread: data.room.unread });
      changed();
    })
    .catch(() => {}) // read again with the next change
    .finally(() => recounting.delete(roomId));
}

function changed() {
  renderRooms(); // its roomsChanged hook marks the open room read
}

function showing() {
  return document.visibilityState === "visible" && !$("chat-view").hidden;
}

// The open room, while the page shows it, is read up to its newest entry.
export function markRead() {
  const roomId = state.roomId;
  const room = state.rooms.get(roomId);
  if (!room || !state.joined.has(roomId) || !(room.unread > 0) || marking.has(roomId) || !showing()) return;
  const seq = room.last_seq;
  const counted = room.unread;
  marking.add(roomId);
  api("PUT", "/rooms/" + roomId + "/read", { seq })
    .then((data) => {
      marking.delete(roomId);
      if (data && data.read_seq > (room.read_seq || 0)) room.read_seq = data.read_seq;
      room.unread = Math.max(0, room.unread - counted); // those that came meanwhile stay unread
      renderRooms(); // and marks those read too
    })
    .catch(() => marking.delete(roomId)); // tried again with the next entry or view change
}

document.addEventListener("visibilitychange", markRead);
