// chat_trio web client: plain ES modules, no build step, no dependencies.
//
// REST for accounts, rooms, history and members; one websocket (/ws) for live messages, sends
// and typing. The websocket reconnects with backoff and resumes with `subscribe` + `after` =
// the last seq seen, so nothing is lost or shown twice. Sends carry a txn_id and are retried
// with the same one until the server acknowledges them. All user text goes into the page
// through textContent. This module signs in and out, opens rooms and routes frames; each
// view lives in its own module.
import { api, ApiError, describe, savedToken, setUnauthorizedHandler, storeToken } from "./api.js";
import { $, setStatus } from "./dom.js";
import { clearMembers, refreshMembers, watchMembers } from "./members.js";
import { clearRooms, refreshRooms, renderRooms } from "./rooms.js";
import * as socket from "./socket.js";
import { actions, state } from "./state.js";
import * as timeline from "./timeline.js";

const ROOMS_REFRESH_MS = 30000;

const el = {
  session: $("session"),
  meName: $("me-name"),
  logout: $("logout"),
  authView: $("auth-view"),
  authForm: $("auth-form"),
  authUsername: $("auth-username"),
  authPassword: $("auth-password"),
  authError: $("auth-error"),
  chatView: $("chat-view"),
  roomTitle: $("room-title"),
  roomTopicText: $("room-topic-text"),
  noRoom: $("no-room"),
  composer: $("composer"),
  input: $("message-input"),
};

const unsubscribing = new Set(); // rooms we sent `unsubscribe` for and await `unsubscribed`
let roomsTimer = null;

// -- session -----------------------------------------------------------------------------

function showAuth(message) {
  el.chatView.hidden = true;
  el.session.hidden = true;
  el.authView.hidden = false;
  el.authError.textContent = message || "";
  setStatus("", "");
  el.authUsername.focus();
}

async function signedIn(user) {
  state.user = user;
  el.meName.textContent = user.username;
  el.session.hidden = false;
  el.authView.hidden = true;
  el.chatView.hidden = false;
  el.authPassword.value = "";
  socket.connect();
  await refreshRooms();
  clearInterval(roomsTimer);
  roomsTimer = setInterval(() => refreshRooms().catch(() => {}), ROOMS_REFRESH_MS);
}

function signedOut(message) {
  storeToken(null);
  state.user = null;
  socket.disconnect();
  clearInterval(roomsTimer);
  timeline.forgetPending();
  closeRoom();
  clearRooms();
  showAuth(message);
}

setUnauthorizedHandler(signedOut);

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
  if (state.roomId !== null && socket.send({ type: "unsubscribe", room_id: state.roomId })) {
    unsubscribing.add(state.roomId);
  }
  state.generation += 1;
  state.roomId = null;
  timeline.resetTimeline();
  clearMembers();
  el.composer.hidden = true;
  el.noRoom.hidden = false;
  el.roomTitle.textContent = "Pick a room";
  el.roomTopicText.textContent = "";
}

async function openRoom(roomId) {
  if (roomId === state.roomId) return;
  closeRoom();
  state.roomId = roomId;
  const gen = state.generation;
  el.noRoom.hidden = true;
  const known = state.rooms.get(roomId);
  el.roomTitle.textContent = known ? known.name : "Room " + roomId;
  if (!state.joined.has(roomId)) {
    const data = await api("POST", "/rooms/" + roomId + "/join");
    state.rooms.set(roomId, data.room);
    state.joined.add(roomId);
  }
  if (gen !== state.generation) return;
  renderRooms();
  el.composer.hidden = false;
  if (!(await timeline.startTimeline(gen))) return;
  watchMembers();
  el.input.focus();
}

actions.openRoom = openRoom;

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

function onFrame(frame) {
  switch (frame.type) {
    case "hello":
      timeline.subscribe();
      timeline.resendPending();
      refreshMembers();
      break;
    case "message":
      timeline.receiveMessage(frame.message);
      break;
    case "ack":
      if (frame.message) timeline.receiveMessage(frame.message);
      break;
    case "gap":
      if (frame.room_id === state.roomId) timeline.refetch().catch(() => {});
      break;
    case "typing":
      timeline.someoneTyping(frame);
      break;
    case "unsubscribed":
      if (unsubscribing.delete(frame.room_id)) break; // the answer to our own unsubscribe
      if (frame.room_id === state.roomId) {
        // we left the room elsewhere
        state.joined.delete(frame.room_id);
        closeRoom();
        refreshRooms().catch(() => {});
      }
      break;
    case "error":
      timeline.sendRefused(frame);
      break;
    default:
      break;
  }
}

socket.configure({
  opened: () => unsubscribing.clear(),
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
