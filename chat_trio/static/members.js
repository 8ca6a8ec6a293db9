// The open room's member list.
import { api } from "./api.js";
import { $, clear, node } from "./dom.js";
import { renderRooms } from "./rooms.js";
import { state } from "./state.js";

const MEMBERS_REFRESH_MS = 15000;

const el = { memberList: $("member-list") };

let memberIds = new Set(); // members of the open room, as last listed
let timer = null;

export function isMember(userId) {
  return memberIds.has(userId);
}

export function clearMembers() {
  clearInterval(timer);
  clear(el.memberList);
  memberIds = new Set();
}

export function watchMembers() {
  refreshMembers();
  clearInterval(timer);
  timer = setInterval(refreshMembers, MEMBERS_REFRESH_MS);
}

export async function refreshMembers() {
  const roomId = state.roomId;
  if (roomId === null) return;
  try {
    const data = await api("GET", "/rooms/" + roomId + "/members");
    if (roomId !== state.roomId) return;
    const members = data.members.slice().sort((a, b) => Number(b.online) - Number(a.online));
    clear(el.memberList);
    memberIds = new Set(members.map((m) => m.user.id));
    const room = state.rooms.get(roomId);
    if (room && room.member_count !== members.length) {
      room.member_count = members.length;
      renderRooms();
    }
    for (const m of members) {
      const li = node("li", m.online ? "member online" : "member");
      li.append(node("span", "dot"), node("span", "member-name", m.user.username));
      li.append(node("span", "visually-hidden", m.online ? " (online)" : " (offline)"));
      li.title = m.online ? "online" : "offline";
      el.memberList.append(li);
    }
  } catch (_) {
    // shown again on the next refresh
  }
}
