// The room list, the "new room" form and my invites. Nothing here polls: the lists are read
// when the websocket says hello (after every reconnect) and kept current by `room` and
// `invite` frames and by my own actions.
import { api, describe, listAll } from "./api.js";
import { $, button, clear, node, showError } from "./dom.js";
import { actions, state } from "./state.js";

const ROOMS_PAGE_SIZE = 500; // the most GET /rooms gives at once

const el = {
  roomList: $("room-list"),
  roomsEmpty: $("rooms-empty"),
  createRoom: $("create-room"),
  createRoomForm: $("create-room-form"),
  roomName: $("room-name"),
  roomTopic: $("room-topic"),
  roomPrivate: $("room-private"),
  roomError: $("room-error"),
  roomTitle: $("room-title"),
  roomTopicText: $("room-topic-text"),
  sendError: $("send-error"),
  invites: $("invites"),
  inviteList: $("invite-list"),
};

let invites = []; // GET /invites: [{room_id, user, invited_by, created_at, room}]

let roomReads = 0; // only the latest answer is shown (answers may cross)

export async function refreshRooms() {
  const ticket = ++roomReads;
  const [all, mine] = await Promise.all([
    listAll("/rooms", "rooms", ROOMS_PAGE_SIZE, ""),
    listAll("/rooms", "rooms", ROOMS_PAGE_SIZE, "&joined=true"),
  ]);
  if (ticket !== roomReads) return;
  // GET /rooms lists public rooms and mine; mine carry my view of them (my_role, a direct
  // room's name as I see it), so they win.
  state.rooms = new Map(all.map((r) => [r.id, r]));
  for (const r of mine) state.rooms.set(r.id, r);
  state.joined = new Set(mine.map((r) => r.id));
  renderRooms();
}

export function clearRooms() {
  roomReads += 1; // an answer still on its way belongs to the session that ended
  inviteReads += 1;
  state.rooms.clear();
  state.joined.clear();
  invites = [];
  clear(el.roomList);
  renderInvites();
}

// I am in this room now (created, joined, accepted, or a direct room opened).
export function joinedRoom(room) {
  state.rooms.set(room.id, room);
  state.joined.add(room.id);
  invites = invites.filter((i) => i.room_id !== room.id);
  renderInvites();
  renderRooms();
}

// I am no longer in this room: a private one disappears from my list, a public one stays to join.
export function leftRoom(roomId) {
  state.joined.delete(roomId);
  const room = state.rooms.get(roomId);
  if (room && room.visibility === "private") state.rooms.delete(roomId);
  else if (room) delete room.my_role;
  renderRooms();
}

// A `room` frame (created or updated): everyone who can see the room gets it, shaped for them
// (their role in it, a direct room's name as they see it).
export function roomChanged(frame) {
  const room = frame.room;
  if (!room || typeof room.id !== "number") return;
  state.rooms.set(room.id, { ...state.rooms.get(room.id), ...room });
  if (room.my_role) state.joined.add(room.id);
  renderRooms();
}

export function renderRooms() {
  const focused = el.roomList.contains(document.activeElement) ? document.activeElement.dataset.roomId : null;
  clear(el.roomList);
  const rooms = Array.from(state.rooms.values()).sort((a, b) => a.id - b.id);
  el.roomsEmpty.hidden = rooms.length > 0;
  if (!rooms.length) el.createRoom.open = true;
  for (const room of rooms) {
    const li = node("li");
    const b = node("button", "room-button");
    b.type = "button";
    b.title = room.topic ? room.name + " — " + room.topic : room.name;
    b.dataset.roomId = String(room.id);
    b.dataset.kind = room.kind || "room";
    b.dataset.visibility = room.visibility || "public";
    const name = node("span", "room-name", room.name);
    if (room.visibility === "private" && room.kind !== "direct") {
      const lock = node("span", "lock");
      lock.title = "private: members and invited people only";
      name.prepend(lock, node("span", "visually-hidden", "private room "));
    }
    const meta = node("span", "room-meta", state.joined.has(room.id)
      ? room.member_count + (room.member_count === 1 ? " member" : " members")
      : "join");
    b.append(name, meta);
    if (state.joined.has(room.id) && room.unread > 0 && room.id !== state.roomId) {
      const badge = node("span", "unread-badge", room.unread > 99 ? "99+" : String(room.unread));
      badge.setAttribute("aria-label", room.unread + " unread");
      b.classList.add("has-unread");
      b.append(badge);
    }
    if (room.id === state.roomId) {
      b.setAttribute("aria-current", "true");
      li.className = "current";
    }
    b.addEventListener("click", () => actions.openRoom(room.id).catch(showError));
    li.append(b);
    el.roomList.append(li);
    if (focused === b.dataset.roomId) b.focus();
  }
  const room = state.rooms.get(state.roomId);
  if (room) {
    el.roomTitle.textContent = room.name;
    el.roomTopicText.textContent = room.topic || "";
  }
  if (actions.roomsChanged) actions.roomsChanged();
}

el.createRoomForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  el.roomError.textContent = "";
  const name = el.roomName.value.trim();
  const topic = el.roomTopic.value.trim();
  if (!name) {
    el.roomError.textContent = "Give the room a name.";
    return;
  }
  try {
    const body = topic ? { name, topic } : { name };
    if (el.roomPrivate.checked) body.visibility = "private";
    const data = await api("POST", "/rooms", body);
    el.roomName.value = "";
    el.roomTopic.value = "";
    el.roomPrivate.checked = false;
    el.createRoom.open = false;
    joinedRoom(data.room);
    await actions.openRoom(data.room.id);
  } catch (err) {
    el.roomError.textContent = err.code === "room_name_taken" ? "A room with that name exists already." : describe(err);
  }
});

// -- invites -----------------------------------------------------------------------------

let inviteReads = 0; // only the latest answer is shown (answers may cross)

export async function refreshInvites() {
  const ticket = ++inviteReads;
  const data = await api("GET", "/invites");
  if (ticket !== inviteReads) return;
  invites = data.invites;
  renderInvites();
}

function renderInvites() {
  clear(el.inviteList);
  el.invites.hidden = invites.length === 0;
  for (const invite of invites) {
    const li = node("li", "invite");
    li.dataset.roomId = String(invite.room_id);
    const roomLabel = invite.room ? invite.room.name : "room " + invite.room_id;
    const who = invite.invited_by ? invite.invited_by.username : "someone";
    li.append(node("p", "invite-text", who + " invited you to " + roomLabel));
    const row = node("div", "actions");
    row.append(
      button("Accept", "", () => accept(invite, li)),
      button("Decline", "secondary", () => decline(invite, li)),
    );
    li.append(row, node("p", "error"));
    el.inviteList.append(li);
  }
}

async function accept(invite, li) {
  try {
    const data = await api("POST", "/rooms/" + invite.room_id + "/join");
    joinedRoom(data.room);
    await actions.openRoom(data.room.id);
  } catch (err) {
    inviteFailed(invite, li, err);
  }
}

async function decline(invite, li) {
  try {
    await api("DELETE", "/rooms/" + invite.room_id + "/invites/" + state.user.id);
    invites = invites.filter((i) => i !== invite);
    renderInvites();
  } catch (err) {
    inviteFailed(invite, li, err);
  }
}

function inviteFailed(invite, li, err) {
  if (err.status === 404 || err.status === 403) {
    // withdrawn, or I was banned meanwhile: the invite is gone
    invites = invites.filter((i) => i !== invite);
    renderInvites();
    el.sendError.textContent = "That invite is no longer valid.";
  } else {
    li.querySelector(".error").textContent = describe(err);
  }
}
