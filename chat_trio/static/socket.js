// The one websocket (/ws): authenticates with its first frame (browsers cannot set headers),
// pings to notice a dead link, and reconnects with jittered backoff. What a frame means is the
// app's business: it gets every frame, and is told when the server ends or refuses the session.
import { getToken } from "./api.js";
import { setStatus } from "./dom.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 20000; // a ping unanswered by the next one means the link is dead

const ws = {
  socket: null,
  ready: false, // authenticated (hello received)
  attempt: 0,
  timer: null,
  wanted: false,
  awaitingPong: false,
};

let handlers = {
  opened: () => {}, // a new socket is open (not yet authenticated)
  frame: () => {}, // every frame, after the socket's own bookkeeping
  revoked: () => {}, // closed with 4001: the token no longer works
  refused: () => scheduleReconnect(), // closed with 1008: check the session, then reconnect
};

export function configure(h) {
  handlers = { ...handlers, ...h };
}

export function isReady() {
  return ws.ready;
}

export function send(frame) {
  if (ws.socket && ws.ready && ws.socket.readyState === WebSocket.OPEN) {
    ws.socket.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

export function connect() {
  ws.wanted = true;
  clearTimeout(ws.timer);
  if (ws.socket) return;
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (_) {
    scheduleReconnect();
    return;
  }
  ws.socket = socket;
  ws.ready = false;
  ws.awaitingPong = false;
  setStatus(ws.attempt ? "Reconnecting…" : "Connecting…", "connecting");
  socket.addEventListener("open", () => {
    handlers.opened();
    socket.send(JSON.stringify({ type: "auth", token: getToken() }));
  });
  socket.addEventListener("message", (event) => {
    if (socket !== ws.socket) return;
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    onFrame(frame);
  });
  socket.addEventListener("close", (event) => {
    if (socket !== ws.socket) return;
    ws.socket = null;
    ws.ready = false;
    if (!ws.wanted) return;
    if (event.code === 4001) handlers.revoked();
    else if (event.code === 1008) handlers.refused(); // auth failed, or no longer a member
    else scheduleReconnect();
  });
}

function onFrame(frame) {
  ws.awaitingPong = false; // any frame shows the link is alive
  if (frame.type === "hello") {
    ws.ready = true;
    ws.attempt = 0;
    setStatus("Live", "live");
  }
  handlers.frame(frame);
}

// Browsers may not notice a silently dropped connection for minutes: ping, and reconnect
// when the previous ping got no answer.
function heartbeat() {
  if (!ws.ready || !ws.socket) return;
  if (ws.awaitingPong) {
    const dead = ws.socket;
    ws.socket = null;
    ws.ready = false;
    dead.close();
    scheduleReconnect();
    return;
  }
  ws.awaitingPong = true;
  send({ type: "ping" });
}

setInterval(heartbeat, PING_EVERY_MS);

export function scheduleReconnect() {
  ws.attempt += 1;
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (ws.attempt - 1));
  const delay = Math.round(base / 2 + Math.random() * base / 2);
  setStatus("Offline — reconnecting in " + Math.ceil(delay / 1000) + " s", "offline");
  clearTimeout(ws.timer);
  ws.timer = setTimeout(connect, delay);
}

export function disconnect() {
  ws.wanted = false;
  ws.ready = false;
  clearTimeout(ws.timer);
  if (ws.socket) {
    const s = ws.socket;
    ws.socket = null;
    s.close(1000, "bye");
  }
}
