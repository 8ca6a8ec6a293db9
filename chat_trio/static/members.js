// The open room's member list: who is in, their role, who is online; the invite form; and for
// each member what I may do (message them; kick, ban, change their role when my role allows).
// Read when the room opens or the websocket says hello, re-read when a timeline entry changes
// membership, and kept current by `presence` frames: nothing polls.
import { api, describe } from "./api.js";
import { $, button, clear, node } from "./dom.js";
import { showModeration } from "./moderation.js";
import { joinedRoom, renderRooms } from "./rooms.js";
import { actions, state } from "./state.js";

const RANK = { member: 1, moderator: 2, owner: 3 };
const MAX_ROOMS_SEARCHED = 50; // rooms whose members are read to find someone to invite

const el = {
  memberList: $("member-list"),
  memberError: $("member-error"),
  inviteForm: $("invite-form"),
  inviteUsername: $("invite-username"),
  inviteError: $("invite-error"),
  inviteDone: $("invite-done"),
};

let members = []; // [{user, joined_at, online, role}] of the open room
let openMenu = null; // the user whose action menu is open: it stays open across redraws
let confirming = false; // a kick or ban awaits its confirmation: redraw only after it
const known = new Map(); // lower-case username → user, from every member list read

export function isMember(userId) {
  return members.some((m) => m.user.id === userId);
}

export function clearMembers() {
  showModeration(false);
  clear(el.memberList);
  members = [];
  openMenu = null;
  confirming = false;
  el.inviteForm.hidden = true;
  el.memberError.textContent = "";
}

export function forgetPeople() {
  known.clear();
}

function remember(list) {
  for (const m of list) known.set(m.user.username.toLowerCase(), m.user);
}

// My rank in the open room: a server admin acts as its owner.
function myRank() {
  if (state.user && state.user.admin) return RANK.owner;
  const me = members.find((m) => state.user && m.user.id === state.user.id);
  const room = state.rooms.get(state.roomId);
  return RANK[(me && me.role) || (room && room.my_role)] || 0;
}

let reads = 0; // member lists asked for: only the latest answer is shown (answers may cross)

export async function refreshMembers() {
  const roomId = state.roomId;
  if (roomId === null) return;
  const ticket = ++reads;
  try {
    const data = await api("GET", "/rooms/" + roomId + "/members");
    if (roomId !== state.roomId || ticket !== reads) return;
    members = data.members;
    remember(members);
    const room = state.rooms.get(roomId);
    const me = members.find((m) => state.user && m.user.id === state.user.id);
    if (room && (room.member_count !== members.length || (me && me.role && room.my_role !== me.role))) {
      room.member_count = members.length;
      if (me && me.role) room.my_role = me.role;
      renderRooms();
    }
    renderMembers();
  } catch (_) {
    // read again on the next hello or membership change
  }
}

// A `presence` frame: a member's first websocket opened or last one closed.
export function presence(frame) {
  if (frame.room_id !== state.roomId || !frame.user) return;
  const m = members.find((x) => x.user.id === frame.user.id);
  if (!m) {
    refreshMembers();
    return;
  }
  m.online = Boolean(frame.online);
  renderMembers();
}

function renderMembers() {
  if (confirming) return;
  const room = state.rooms.get(state.roomId);
  const direct = room && room.kind === "direct";
  const rank = myRank();
  const sorted = members.slice().sort((a, b) =>
    Number(b.online) - Number(a.online) || (RANK[b.role] || 0) - (RANK[a.role] || 0)
    || a.user.username.localeCompare(b.user.username));
  clear(el.memberList);
  for (const m of sorted) {
    const li = node("li", m.online ? "member online" : "member");
    li.dataset.userId = String(m.user.id);
    li.append(node("span", "dot"), node("span", "member-name", m.user.username));
    if (m.role && m.role !== "member") li.append(node("span", "role", m.role));
    li.append(node("span", "visually-hidden", m.online ? " (online)" : " (offline)"));
    li.title = m.online ? "online" : "offline";
    const mine = state.user && m.user.id === state.user.id;
    const menu = mine ? null : memberMenu(m, rank, direct);
    if (menu) li.append(menu);
    el.memberList.append(li);
  }
  el.inviteForm.hidden = direct || rank < RANK.moderator;
  showModeration(rank >= RANK.moderator);
}

// What I may do to a member, in a menu; null when nothing (e.g. the other side of a direct room).
function memberMenu(m, rank, direct) {
  const list = node("div", "member-actions");
  const theirs = RANK[m.role] || RANK.member;
  if (!direct) {
    list.append(button("Message", "link", () => openDirect(m.user)));
    if (rank >= RANK.moderator && rank > theirs) {
      list.append(button("Kick", "link", () => confirmRemoval(list, m.user, "kick")));
      list.append(button("Ban", "link", () => confirmRemoval(list, m.user, "ban")));
    }
    if (rank === RANK.owner && m.role === "member") {
      list.append(button("Make moderator", "link", () => setRole(m.user, "moderator")));
    }
    if (rank === RANK.owner && m.role === "moderator") {
      list.append(button("Make member", "link", () => setRole(m.user, "member")));
    }
  }
  if (!list.childElementCount) return null;
  const menu = node("details", "member-menu");
  menu.open = openMenu === m.user.id;
  menu.addEventListener("toggle", () => {
    if (menu.open) openMenu = m.user.id;
    else if (openMenu === m.user.id) openMenu = null;
  });
  const summary = node("summary", "", "⋯");
  summary.title = "Actions for " + m.user.username;
  summary.setAttribute("aria-label", "Actions for " + m.user.username);
  menu.append(summary, list);
  return menu;
}

// Kick and ban ask once more, with an optional reason, inside the member's menu.
function confirmRemoval(list, user, what) {
  confirming = true;
  clear(list);
  const verb = what === "kick" ? "Kick" : "Ban";
  const reason = node("input");
  reason.maxLength = 256;
  reason.placeholder = "Reason (optional)";
  reason.setAttribute("aria-label", verb + " reason");
  list.append(node("p", "hint", what === "kick"
    ? "Remove " + user.username + " from this room? They can come back if invited (or if the room is public)."
    : "Ban " + user.username + "? They are removed and cannot come back until unbanned."), reason);
  list.append(button(verb + " " + user.username, "danger", async () => {
    const body = { user_id: user.id };
    if (reason.value.trim()) body.reason = reason.value.trim();
    confirming = false;
    openMenu = null;
    await act("POST", "/rooms/" + state.roomId + (what === "kick" ? "/kick" : "/bans"), body);
  }));
  list.append(button("Cancel", "secondary", () => {
    confirming = false;
    renderMembers();
  }));
  reason.focus();
}

async function setRole(user, role) {
  openMenu = null;
  await act("PUT", "/rooms/" + state.roomId + "/members/" + user.id + "/role", { role });
}

async function act(method, path, body) {
  el.memberError.textContent = "";
  try {
    await api(method, path, body);
  } catch (err) {
    el.memberError.textContent = describe(err);
  }
  await refreshMembers();
}

async function openDirect(user) {
  openMenu = null;
  el.memberError.textContent = "";
  try {
    const data = await api("POST", "/direct", { user_id: user.id });
    joinedRoom(data.room);
    await actions.openRoom(data.room.id);
  } catch (err) {
    el.memberError.textContent = describe(err);
  }
}

// -- invites -----------------------------------------------------------------------------

// The API invites by user id; people are found among the members of the rooms I can read.
async function findUser(username) {
  const key = username.toLowerCase();
  if (known.has(key)) return known.get(key);
  if (state.user && state.user.admin) {
    const data = await api("GET", "/admin/users?limit=10&q=" + encodeURIComponent(username));
    return data.users.find((u) => u.username.toLowerCase() === key) || null;
  }
  const rooms = Array.from(state.joined).slice(0, MAX_ROOMS_SEARCHED);
  await Promise.all(rooms.map(async (id) => {
    try {
      remember((await api("GET", "/rooms/" + id + "/members")).members);
    } catch (_) {
      // a room I just left: skip it
    }
  }));
  return known.get(key) || null;
}

el.inviteForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  el.inviteError.textContent = "";
  el.inviteDone.textContent = "";
  const username = el.inviteUsername.value.trim();
  if (!username || state.roomId === null) return;
  const roomId = state.roomId;
  try {
    const user = await findUser(username);
    if (!user) {
      el.inviteError.textContent = "No one called " + username + " shares a room with you.";
      return;
    }
    await api("POST", "/rooms/" + roomId + "/invites", { user_id: user.id });
    el.inviteUsername.value = "";
    el.inviteDone.textContent = "Invited " + user.username + ".";
  } catch (err) {
    if (err.code === "already_member") el.inviteError.textContent = username + " is a member already.";
    else if (err.code === "banned") el.inviteError.textContent = username + " is banned from this room.";
    else if (err.code === "deactivated") el.inviteError.textContent = username + "'s account is closed.";
    else el.inviteError.textContent = describe(err);
  }
});
