// The room list and the "new room" form.
import { api, describe, listAll } from "./api.js";
import { $, clear, node } from "./dom.js";
import { actions, state } from "./state.js";

const ROOMS_PAGE_SIZE = 500; // the most GET /rooms gives at once

const el = {
  roomList: $("room-list"),
  roomsEmpty: $("rooms-empty"),
  createRoom: $("create-room"),
  createRoomForm: $("create-room-form"),
  roomName: $("room-name"),
  roomTopic: $("room-topic"),
  roomError: $("room-error"),
  roomTitle: $("room-title"),
  roomTopicText: $("room-topic-text"),
  sendError: $("send-error"),
};

export async function refreshRooms() {
  const [all, mine] = await Promise.all([
    listAll("/rooms", "rooms", ROOMS_PAGE_SIZE, ""),
    listAll("/rooms", "rooms", ROOMS_PAGE_SIZE, "&joined=true"),
  ]);
  state.rooms = new Map(all.map((r) => [r.id, r]));
  state.joined = new Set(mine.map((r) => r.id));
  renderRooms();
}

export function clearRooms() {
  state.rooms.clear();
  state.joined.clear();
  clear(el.roomList);
}

export function renderRooms() {
  const focused = el.roomList.contains(document.activeElement) ? document.activeElement.dataset.roomId : null;
  clear(el.roomList);
  const rooms = Array.from(state.rooms.values());
  el.roomsEmpty.hidden = rooms.length > 0;
  if (!rooms.length) el.createRoom.open = true;
  for (const room of rooms) {
    const li = node("li");
    const button = node("button", "room-button");
    button.type = "button";
    button.title = room.topic ? room.name + " — " + room.topic : room.name;
    button.dataset.roomId = String(room.id);
    const name = node("span", "room-name", room.name);
    const meta = node("span", "room-meta", state.joined.has(room.id)
      ? room.member_count + (room.member_count === 1 ? " member" : " members")
      : "join");
    button.append(name, meta);
    if (room.id === state.roomId) {
      button.setAttribute("aria-current", "true");
      li.className = "current";
    }
    button.addEventListener("click", () => actions.openRoom(room.id).catch(showError));
    li.append(button);
    el.roomList.append(li);
    if (focused === button.dataset.roomId) button.focus();
  }
  const room = state.rooms.get(state.roomId);
  if (room) {
    el.roomTitle.textContent = room.name;
    el.roomTopicText.textContent = room.topic || "";
  }
}

function showError(err) {
  el.sendError.textContent = err && err.message ? err.message : "Something went wrong.";
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
    const data = await api("POST", "/rooms", body);
    el.roomName.value = "";
    el.roomTopic.value = "";
    el.createRoom.open = false;
    state.rooms.set(data.room.id, data.room);
    state.joined.add(data.room.id);
    await actions.openRoom(data.room.id);
  } catch (err) {
    el.roomError.textContent = err.code === "room_name_taken" ? "A room with that name exists already." : describe(err);
  }
});
