// chat_trio web client: plain ES modules, no build step, no dependencies.
//
// REST for accounts, rooms, history and members; one websocket (/ws) for everything live:
// messages and room events, sends, typing, presence, room and invite changes. Nothing polls:
// lists are read when the websocket says hello and then kept current by frames. The websocket
// reconnects with backoff and resumes with `subscribe` + `after` = the last seq seen, so
// nothing is lost or shown twice. All user text goes into the page through textContent. This
// module signs in and out, switches views, opens rooms and routes frames; each view lives in
// its own module.
import { showAccount } from "./account.js";
import { showAdmin } from "./admin.js";
import { api, ApiError, describe, savedToken, setUnauthorizedHandler, storeToken } from "./api.js";
import * as composer from "./composer.js";
import { $, setStatus, showError } from "./dom.js";
import { clearMembers, forgetPeople, presence, refreshMembers } from "./members.js";
import { clearRooms, joinedRoom, leftRoom, refreshInvites, refreshRooms, renderRooms, roomChanged } from "./rooms.js";
import * as socket from "./socket.js";
import { actions, state } from "./state.js";
import { closeSearch } from "./search.js";
import * as timeline from "./timeline.js";
import * as unread from "./unread.js";

const el = {
  session: $("session"),
  meName: $("me-name"),
  logout: $("logout"),
  chatButton: $("chat-button"),
  accountButton: $("account-button"),
  adminButton: $("admin-button"),
  authView: $("auth-view"),
  authForm: $("auth-form"),
  authUsername: $("auth-username"),
  authPassword: $("auth-password"),
  authError: $("auth-error"),
  chatView: $("chat-view"),
  accountView: $("account-view"),
  adminView: $("admin-view"),
  roomTitle: $("room-title"),
  roomTopicText: $("room-topic-text"),
  roomNotice: $("room-notice"),
  leaveRoom: $("leave-room"),
  noRoom: $("no-room"),
  composer: $("composer"),
  input: $("message-input"),
};

const unsubscribing = new Set(); // rooms we sent `unsubscribe` for and await `unsubscribed`
let helloSeen = false; // the first hello after signing in needs no resync: the lists are fresh

// -- session and views -------------------------------------------------------------------

function showAuth(message) {
  el.chatView.hidden = true;
  el.accountView.hidden = true;
  el.adminView.hidden = true;
  el.session.hidden = true;
  el.authView.hidden = false;
  el.authError.textContent = message || "";
  setStatus("", "");
  el.authUsername.focus();
}

function showView(name) {
  el.chatView.hidden = name !== "chat";
  el.accountView.hidden = name !== "account";
  el.adminView.hidden = name !== "admin";
  el.chatButton.hidden = name === "chat";
  el.accountButton.hidden = name === "account";
  el.adminButton.hidden = name === "admin" || !(state.user && state.user.admin);
  if (name === "account") showAccount();
  if (name === "admin") showAdmin();
  if (name === "chat") unread.markRead();
}

el.chatButton.addEventListener("click", () => showView("chat"));
el.accountButton.addEventListener("click", () => showView("account"));
el.adminButton.addEventListener("click", () => showView("admin"));

async function signedIn(user) {
  state.user = user;
  el.meName.textContent = user.username;
  el.session.hidden = false;
  el.authView.hidden = true;
  showView("chat");
  el.authPassword.value = "";
  helloSeen = false;
  socket.connect();
  await Promise.all([refreshRooms(), refreshInvites().catch(() => {})]);
}

function signedOut(message) {
  storeToken(null);
  state.user = null;
  socket.disconnect();
  composer.forgetPending();
  forgetPeople();
  closeRoom();
  clearRooms();
  closeSearch();
  showAuth(message);
}

setUnauthorizedHandler(signedOut);
actions.signedOut = signedOut;

el.authForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = event.submitter && event.submitter.value === "register" ? "register" : "login";
  const username = el.authUsername.value.trim();
  const password = el.authPassword.value;
  el.authError.textContent = "";
  if (!username || !password) {
    el.authError.textContent = "Enter a username and a password.";
    return;
  }
  const buttons = el.authForm.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (mode === "register") await api("POST", "/register", { username, password });
    const data = await api("POST", "/login", { username, password });
    storeToken(data.token);
    await signedIn(data.user);
  } catch (err) {
    el.authError.textContent = describe(err, mode === "register" ? "Could not create the account." : "Request failed.");
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
});

el.logout.addEventListener("click", async () => {
  try {
    await api("POST", "/logout");
  } catch (_) {
    // the token is dropped locally either way
  }
  signedOut("You have logged out.");
});

// -- the open room -----------------------------------------------------------------------

function closeRoom() {
  // a room I am in stays subscribed: its unread count keeps up
  const keep = state.joined.has(state.roomId);
  if (state.roomId !== null && !keep && socket.send({ type: "unsubscribe", room_id: state.roomId })) {
    unsubscribing.add(state.roomId);
  }
  state.generation += 1;
  state.roomId = null;
  timeline.resetTimeline();
  clearMembers();
  el.composer.hidden = true;
  el.leaveRoom.hidden = true;
  el.noRoom.hidden = false;
  el.roomTitle.textContent = "Pick a room";
  el.roomTopicText.textContent = "";
}

async function openRoom(roomId) {
  showView("chat");
  if (roomId === state.roomId) return;
  closeRoom();
  el.roomNotice.textContent = "";
  state.roomId = roomId;
  const gen = state.generation;
  el.noRoom.hidden = true;
  const known = state.rooms.get(roomId);
  el.roomTitle.textContent = known ? known.name : "Room " + roomId;
  try {
    if (!state.joined.has(roomId)) {
      const data = await api("POST", "/rooms/" + roomId + "/join");
      joinedRoom(data.room);
    }
    if (gen !== state.generation) return;
    renderRooms();
    el.composer.hidden = false;
    el.leaveRoom.hidden = false;
    if (!(await timeline.startTimeline(gen))) return;
  } catch (err) {
    if (gen !== state.generation) return;
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) {
      // gone, private, or I was removed meanwhile: say so and drop it from my list
      closeRoom();
      leftRoom(roomId);
      el.roomNotice.textContent = err.code === "banned" ? "You are banned from that room." : "You cannot open that room.";
      return;
    }
    throw err;
  }
  refreshMembers();
  el.input.focus();
}

actions.openRoom = openRoom;

// The server also answers a leave with `unsubscribed` (reason "left"); whichever comes first
// closes the room.
el.leaveRoom.addEventListener("click", async () => {
  const roomId = state.roomId;
  if (roomId === null) return;
  try {
    await api("POST", "/rooms/" + roomId + "/leave");
    if (state.roomId === roomId) removed({ room_id: roomId, reason: "left" });
  } catch (err) {
    showError(err);
  }
});

// The server ended my subscription: I left elsewhere, or a moderator removed me.
function removed(frame) {
  const room = state.rooms.get(frame.room_id);
  const name = room ? room.name : "the room";
  leftRoom(frame.room_id);
  if (frame.room_id !== state.roomId) return;
  closeRoom();
  const why = {
    kicked: "You were removed from " + name + " by a moderator.",
    banned: "You were banned from " + name + ".",
    left: "You left " + name + ".",
  };
  el.roomNotice.textContent = why[frame.reason] || "You are no longer a member of " + name + ".";
}

// -- the websocket -----------------------------------------------------------------------

async function recheckThenReconnect() {
  try {
    await api("GET", "/me");
    await refreshRooms();
    if (state.roomId !== null && !state.joined.has(state.roomId)) closeRoom();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return; // signed out already
  }
  socket.scheduleReconnect();
}

// After a reconnect, frames may have been missed while offline: read the lists once again.
async function resync() {
  await Promise.all([refreshRooms(), refreshInvites()]);
  if (state.roomId !== null && !state.joined.has(state.roomId)) closeRoom();
}

function onFrame(frame) {
  switch (frame.type) {
    case "hello":
      if (helloSeen) resync().catch(() => {}); // and then subscribes my rooms from the fresh list
      else unread.subscribeAll();
      helloSeen = true;
      timeline.subscribe();
      composer.resendPending();
      refreshMembers();
      break;
    case "message":
      timeline.receiveMessage(frame.message);
      unread.entry(frame.message);
      break;
    case "ack":
      if (frame.message) timeline.receiveMessage(frame.message);
      if (frame.message) unread.entry(frame.message);
      break;
    case "gap":
      if (frame.room_id === state.roomId) timeline.refetch().catch(() => {});
      else unread.recount(frame.room_id);
      break;
    case "read":
      unread.read(frame);
      break;
    case "typing":
      composer.someoneTyping(frame);
      break;
    case "presence":
      presence(frame);
      break;
    case "room":
      roomChanged(frame);
      if (frame.room && frame.room.id === state.roomId) refreshMembers(); // e.g. my role changed
      break;
    case "invite":
      refreshInvites().catch(() => {});
      break;
    case "unsubscribed":
      unread.unsubscribed(frame.room_id);
      if (unsubscribing.delete(frame.room_id) && !frame.reason) break; // the answer to our own unsubscribe
      removed(frame);
      break;
    case "error":
      composer.sendRefused(frame);
      break;
    default:
      break;
  }
}

socket.configure({
  opened: () => {
    unsubscribing.clear();
    unread.socketOpened();
  },
  frame: onFrame,
  revoked: () => signedOut("Your session ended. Please sign in again."),
  refused: recheckThenReconnect,
});

// -- start -------------------------------------------------------------------------------

async function start() {
  const token = savedToken();
  if (!token) {
    showAuth();
    return;
  }
  storeToken(token);
  try {
    const data = await api("GET", "/me");
    await signedIn(data.user);
  } catch (err) {
    if (err instanceof ApiError) showAuth();
    else showAuth("Cannot reach the server.");
  }
}

start();
