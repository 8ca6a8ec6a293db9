// Room administration for its moderators and owner (and server admins): the room's name, topic
// and visibility, and who is banned (with unban). Shown only when the caller's role allows;
// the ban list is read when it is opened and again when a ban entry arrives.
import { api, describe } from "./api.js";
import { $, button, clear, node, timeLabel } from "./dom.js";
import { roomChanged } from "./rooms.js";
import { state } from "./state.js";

const el = {
  settings: $("room-settings"),
  form: $("room-settings-form"),
  name: $("settings-name"),
  topic: $("settings-topic"),
  private: $("settings-private"),
  settingsError: $("settings-error"),
  settingsDone: $("settings-done"),
  bans: $("bans"),
  banList: $("ban-list"),
  bansEmpty: $("bans-empty"),
  bansError: $("bans-error"),
};

let shownFor = null; // the room the settings and bans shown are of

// Called whenever the member list is drawn: `allowed` says whether my role is moderator or up.
export function showModeration(allowed) {
  $("messages").classList.toggle("can-moderate", Boolean(allowed)); // others' messages: Delete
  const room = state.rooms.get(state.roomId);
  const show = Boolean(allowed && room && room.kind !== "direct");
  el.settings.hidden = !show;
  el.bans.hidden = !show;
  if (!show) {
    el.settings.open = false;
    el.bans.open = false;
    shownFor = null;
    return;
  }
  if (shownFor !== room.id) {
    shownFor = room.id;
    el.settings.open = false;
    el.settingsError.textContent = "";
    el.settingsDone.textContent = "";
    clear(el.banList);
  }
  if (!el.settings.open) fill(room); // current while closed; left alone while being edited
  if (el.bans.open) refreshBans();
}

function fill(room) {
  el.name.value = room.name;
  el.topic.value = room.topic || "";
  el.private.checked = room.visibility === "private";
}

el.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  el.settingsError.textContent = "";
  el.settingsDone.textContent = "";
  const room = state.rooms.get(state.roomId);
  if (!room) return;
  const body = {};
  const name = el.name.value.trim();
  const topic = el.topic.value.trim();
  const visibility = el.private.checked ? "private" : "public";
  if (name !== room.name) body.name = name;
  if (topic !== (room.topic || "")) body.topic = topic;
  if (visibility !== room.visibility) body.visibility = visibility;
  if (!Object.keys(body).length) {
    el.settingsDone.textContent = "Nothing to change.";
    return;
  }
  try {
    const data = await api("PATCH", "/rooms/" + room.id, body);
    roomChanged({ room: data.room });
    el.settingsDone.textContent = "Saved.";
  } catch (err) {
    el.settingsError.textContent = err.code === "room_name_taken" ? "A room with that name exists already." : describe(err);
  }
});

// -- bans --------------------------------------------------------------------------------

el.bans.addEventListener("toggle", () => {
  if (el.bans.open) refreshBans();
});

async function refreshBans() {
  const roomId = state.roomId;
  if (roomId === null) return;
  try {
    const data = await api("GET", "/rooms/" + roomId + "/bans");
    if (roomId !== state.roomId) return;
    el.bansError.textContent = "";
    clear(el.banList);
    el.bansEmpty.hidden = data.bans.length > 0;
    for (const ban of data.bans) {
      const li = node("li", "ban");
      li.dataset.userId = String(ban.user.id);
      li.append(node("strong", "", ban.user.username));
      const by = ban.banned_by ? " by " + ban.banned_by.username : "";
      li.append(node("div", "hint", timeLabel(ban.created_at) + by + (ban.reason ? ": " + ban.reason : "")));
      li.append(button("Unban " + ban.user.username, "link", () => unban(roomId, ban.user)));
      el.banList.append(li);
    }
  } catch (err) {
    el.bansError.textContent = describe(err);
  }
}

async function unban(roomId, user) {
  try {
    await api("DELETE", "/rooms/" + roomId + "/bans/" + user.id);
  } catch (err) {
    el.bansError.textContent = describe(err);
  }
  refreshBans();
}
