// chat_trio web client: plain JavaScript, no build step, no dependencies.
//
// REST for accounts, rooms, history and members; one websocket (/ws) for live messages, sends
// and typing. The websocket authenticates with its first frame (browsers cannot set headers),
// reconnects with backoff and resumes with `subscribe` + `after` = the last seq seen, so nothing
// is lost or shown twice. Sends carry a txn_id and are retried with the same one until the
// server acknowledges them. All user text goes into the page through textContent.
"use strict";

(() => {
  const TOKEN_KEY = "chat_trio.token";
  const PAGE_SIZE = 50;
  const TYPING_SEND_EVERY_MS = 3000;
  const TYPING_SHOW_MS = 5000;
  const MEMBERS_REFRESH_MS = 15000;
  const ROOMS_REFRESH_MS = 30000;
  const ROOMS_PAGE_SIZE = 500; // the most GET /rooms gives at once
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const PING_EVERY_MS = 20000; // a ping unanswered by the next one means the link is dead

  const $ = (id) => document.getElementById(id);
  const el = {
    connStatus: $("conn-status"),
    session: $("session"),
    meName: $("me-name"),
    logout: $("logout"),
    authView: $("auth-view"),
    authForm: $("auth-form"),
    authUsername: $("auth-username"),
    authPassword: $("auth-password"),
    authError: $("auth-error"),
    chatView: $("chat-view"),
    roomList: $("room-list"),
    roomsEmpty: $("rooms-empty"),
    createRoom: $("create-room"),
    createRoomForm: $("create-room-form"),
    roomName: $("room-name"),
    roomTopic: $("room-topic"),
    roomError: $("room-error"),
    roomTitle: $("room-title"),
    roomTopicText: $("room-topic-text"),
    scroller: $("message-scroller"),
    loadOlder: $("load-older"),
    historyStart: $("history-start"),
    messages: $("messages"),
    noRoom: $("no-room"),
    typing: $("typing"),
    composer: $("composer"),
    input: $("message-input"),
    sendError: $("send-error"),
    memberList: $("member-list"),
  };

  // -- state -------------------------------------------------------------------------------

  const state = {
    token: null,
    user: null,
    rooms: new Map(), // id → room
    joined: new Set(), // ids of rooms I am a member of
    roomId: null, // the open room
    seqs: new Set(), // seqs shown in the open room
    lastSeq: 0, // highest seq seen in the open room: the resume point
    firstSeq: null, // lowest seq shown (for "load older")
    hasOlder: false,
    loadingOlder: false,
    pending: new Map(), // txn_id → {roomId, text, node, failed}
    typers: new Map(), // user id → {name, until}
    memberIds: new Set(), // members of the open room, as last listed
    lastTypingSent: 0,
    unsubscribing: new Set(), // rooms we sent `unsubscribe` for and await `unsubscribed`
    generation: 0, // bumps whenever the open room changes; stale async results are dropped
  };

  const ws = {
    socket: null,
    ready: false, // authenticated (hello received)
    attempt: 0,
    timer: null,
    wanted: false,
    awaitingPong: false,
  };

  let membersTimer = null;
  let roomsTimer = null;
  let typingTimer = null;

  // -- helpers -----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = {};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const err = (data && data.error) || {};
      if (response.status === 401 && state.token && path !== "/login") signedOut("Your session ended. Please sign in again.");
      throw new ApiError(response.status, err.code || "error", err.message || response.statusText || "request failed");
    }
    return data;
  }

  function node(tag, className, text) {
    const n = document.createElement(tag);
    if (className) n.className = className;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function clear(parent) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
  }

  function txnId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function timeLabel(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const now = new Date();
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (d.toDateString() === now.toDateString()) return hm;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm;
  }

  function setStatus(text, kind) {
    el.connStatus.textContent = text;
    el.connStatus.dataset.kind = kind || "";
  }

  function nearBottom() {
    const s = el.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function scrollToBottom() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
  }

  // -- session -----------------------------------------------------------------------------

  function storeToken(token) {
    state.token = token;
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // storage may be unavailable (private mode); the token then lives in memory only
    }
  }

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
    connect();
    await refreshRooms();
    clearInterval(roomsTimer);
    roomsTimer = setInterval(() => refreshRooms().catch(() => {}), ROOMS_REFRESH_MS);
  }

  function signedOut(message) {
    storeToken(null);
    state.user = null;
    disconnect();
    clearInterval(roomsTimer);
    clearInterval(membersTimer);
    state.rooms.clear();
    state.joined.clear();
    state.pending.clear();
    closeRoom();
    clear(el.roomList);
    showAuth(message);
  }

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
      el.authError.textContent = describe(err, mode);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });

  function describe(err, mode) {
    if (!(err instanceof ApiError)) return "Cannot reach the server. Check your connection and try again.";
    if (err.code === "invalid_credentials") return "Wrong username or password.";
    if (err.code === "username_taken") return "That username is taken. Pick another or log in.";
    if (err.code === "rate_limited") return "Too many attempts. Wait a moment and try again.";
    return err.message || (mode === "register" ? "Could not create the account." : "Request failed.");
  }

  el.logout.addEventListener("click", async () => {
    try {
      await api("POST", "/logout");
    } catch (_) {
      // the token is dropped locally either way
    }
    signedOut("You have logged out.");
  });

  // -- rooms -------------------------------------------------------------------------------

  // Every room of GET /rooms (query: "" or "&joined=true"), a page at a time by room id.
  async function listRooms(query) {
    const rooms = [];
    let after = 0;
    for (;;) {
      const page = await api("GET", "/rooms?limit=" + ROOMS_PAGE_SIZE + "&after=" + after + query);
      rooms.push(...page.rooms);
      if (!page.has_more || !page.rooms.length) return rooms;
      after = page.rooms[page.rooms.length - 1].id;
    }
  }

  async function refreshRooms() {
    const [all, mine] = await Promise.all([listRooms(""), listRooms("&joined=true")]);
    state.rooms = new Map(all.map((r) => [r.id, r]));
    state.joined = new Set(mine.map((r) => r.id));
    renderRooms();
  }

  function renderRooms() {
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
      button.addEventListener("click", () => openRoom(room.id).catch(showSendError));
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
      await openRoom(data.room.id);
    } catch (err) {
      el.roomError.textContent = err.code === "room_name_taken" ? "A room with that name exists already." : describe(err);
    }
  });

  function closeRoom() {
    if (state.roomId !== null && wsSend({ type: "unsubscribe", room_id: state.roomId })) {
      state.unsubscribing.add(state.roomId);
    }
    state.generation += 1;
    state.roomId = null;
    resetMessages();
    state.typers.clear();
    renderTyping();
    clear(el.memberList);
    state.memberIds = new Set();
    el.composer.hidden = true;
    el.noRoom.hidden = false;
    el.roomTitle.textContent = "Pick a room";
    el.roomTopicText.textContent = "";
  }

  function resetMessages() {
    clear(el.messages);
    state.seqs.clear();
    state.lastSeq = 0;
    state.firstSeq = null;
    state.hasOlder = false;
    el.loadOlder.hidden = true;
    el.historyStart.hidden = true;
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
    await loadNewest(gen);
    if (gen !== state.generation) return;
    subscribe();
    showPendingFor(roomId);
    refreshMembers();
    clearInterval(membersTimer);
    membersTimer = setInterval(refreshMembers, MEMBERS_REFRESH_MS);
    el.input.focus();
  }

  // -- history -----------------------------------------------------------------------------

  async function loadNewest(gen) {
    const data = await api("GET", "/rooms/" + state.roomId + "/messages?limit=" + PAGE_SIZE);
    if (gen !== state.generation) return;
    resetMessages();
    for (const m of data.messages) insertMessage(m);
    setOlder(data.has_more);
    scrollToBottom();
  }

  function setOlder(hasMore) {
    state.hasOlder = hasMore;
    el.loadOlder.hidden = !hasMore;
    el.historyStart.hidden = hasMore || state.roomId === null;
  }

  async function loadOlder() {
    if (!state.hasOlder || state.loadingOlder || state.firstSeq === null) return;
    const gen = state.generation;
    state.loadingOlder = true;
    el.loadOlder.disabled = true;
    try {
      const data = await api("GET", "/rooms/" + state.roomId + "/messages?limit=" + PAGE_SIZE + "&before=" + state.firstSeq);
      if (gen !== state.generation) return;
      const before = el.scroller.scrollHeight;
      const top = el.scroller.scrollTop;
      for (const m of data.messages) insertMessage(m);
      el.scroller.scrollTop = top + (el.scroller.scrollHeight - before); // keep the view still
      setOlder(data.has_more);
    } catch (err) {
      showSendError(err);
    } finally {
      state.loadingOlder = false;
      el.loadOlder.disabled = false;
    }
  }

  el.loadOlder.addEventListener("click", loadOlder);
  el.scroller.addEventListener("scroll", () => {
    if (el.scroller.scrollTop < 40 && state.hasOlder) loadOlder();
  });

  // Catch up over REST from the resume point, e.g. after a `gap` frame or a seq jump.
  async function refetch() {
    const gen = state.generation;
    await loadNewest(gen);
    if (gen === state.generation) subscribe();
  }

  // -- messages ----------------------------------------------------------------------------

  function renderMessage(m) {
    const li = node("li", "message");
    li.dataset.seq = String(m.seq);
    if (state.user && m.author.id === state.user.id) li.classList.add("mine");
    const head = node("div", "message-head");
    head.append(node("span", "author", m.author.username));
    const time = node("time", "time", timeLabel(m.created_at));
    time.dateTime = m.created_at;
    time.title = new Date(m.created_at).toLocaleString();
    head.append(time);
    li.append(head, node("div", "message-text", m.text));
    return li;
  }

  // Put a message in its place by seq; a seq already shown is ignored (resume may overlap).
  function insertMessage(m) {
    if (m.room_id !== state.roomId || state.seqs.has(m.seq)) return false;
    state.seqs.add(m.seq);
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
    if (m.seq > state.lastSeq) state.lastSeq = m.seq;
    if (state.firstSeq === null || m.seq < state.firstSeq) state.firstSeq = m.seq;
    return true;
  }

  function receiveMessage(m) {
    if (m.txn_id && state.pending.has(m.txn_id) && state.user && m.author.id === state.user.id) {
      const p = state.pending.get(m.txn_id);
      state.pending.delete(m.txn_id);
      if (p.node) p.node.remove();
    }
    if (m.room_id !== state.roomId) return;
    if (state.typers.delete(m.author.id)) renderTyping();
    if (!state.memberIds.has(m.author.id)) refreshMembers(); // someone new: update the list
    const stick = nearBottom() || (state.user && m.author.id === state.user.id);
    if (state.lastSeq && m.seq > state.lastSeq + 1 && !state.seqs.has(m.seq - 1)) {
      // The server never skips a seq on a subscription; if we still see a hole, refetch.
      refetch().catch(() => {});
      return;
    }
    if (insertMessage(m) && stick) scrollToBottom();
  }

  // -- sending -----------------------------------------------------------------------------

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.input.value;
    if (!text.trim() || state.roomId === null) return;
    el.input.value = "";
    el.sendError.textContent = "";
    const entry = { txn: txnId(), roomId: state.roomId, text, node: null, failed: false };
    state.pending.set(entry.txn, entry);
    renderPending(entry);
    scrollToBottom();
    trySend(entry);
  });

  el.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      el.composer.requestSubmit();
    }
  });

  el.input.addEventListener("input", () => {
    const now = Date.now();
    if (!el.input.value || state.roomId === null || !ws.ready) return;
    if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    state.lastTypingSent = now;
    wsSend({ type: "typing", room_id: state.roomId });
  });

  function renderPending(entry) {
    if (entry.roomId !== state.roomId) return;
    const li = node("li", "message mine pending");
    const head = node("div", "message-head");
    head.append(node("span", "author", state.user ? state.user.username : ""));
    const status = node("span", "time", entry.failed ? "not sent" : "sending…");
    head.append(status);
    li.append(head, node("div", "message-text", entry.text));
    if (entry.failed) {
      li.classList.add("failed");
      const retry = node("button", "link", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => {
        entry.failed = false;
        redrawPending(entry);
        trySend(entry);
      });
      const discard = node("button", "link", "Discard");
      discard.type = "button";
      discard.addEventListener("click", () => {
        state.pending.delete(entry.txn);
        li.remove();
      });
      const actions = node("div", "pending-actions");
      actions.append(retry, discard);
      li.append(actions);
    }
    if (entry.node) entry.node.replaceWith(li);
    else el.messages.append(li);
    entry.node = li;
  }

  function redrawPending(entry) {
    if (entry.node && entry.node.isConnected) renderPending(entry);
  }

  function showPendingFor(roomId) {
    for (const entry of state.pending.values()) {
      if (entry.roomId === roomId) {
        entry.node = null;
        renderPending(entry);
      }
    }
  }

  // Send over the websocket when it is up, else over REST. Either way the txn_id makes a
  // repeat harmless; unacknowledged websocket sends are repeated after a reconnect.
  async function trySend(entry) {
    if (entry.failed) return;
    if (ws.ready) {
      wsSend({ type: "send", room_id: entry.roomId, text: entry.text, txn_id: entry.txn, ref: entry.txn });
      return;
    }
    try {
      const data = await api("POST", "/rooms/" + entry.roomId + "/messages", { text: entry.text, txn_id: entry.txn });
      receiveMessage(data.message);
    } catch (err) {
      if (err instanceof ApiError) failSend(entry, err.message);
      // a network error leaves it pending: the next websocket hello sends it again
    }
  }

  function failSend(entry, message) {
    entry.failed = true;
    el.sendError.textContent = "Message not sent: " + message;
    redrawPending(entry);
  }

  function showSendError(err) {
    el.sendError.textContent = err && err.message ? err.message : "Something went wrong.";
  }

  // -- typing ------------------------------------------------------------------------------

  function renderTyping() {
    const now = Date.now();
    for (const [id, t] of state.typers) if (t.until <= now) state.typers.delete(id);
    const names = Array.from(state.typers.values(), (t) => t.name);
    let text = "";
    if (names.length === 1) text = names[0] + " is typing…";
    else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
    else if (names.length > 2) text = "Several people are typing…";
    el.typing.textContent = text;
    clearTimeout(typingTimer);
    if (names.length) typingTimer = setTimeout(renderTyping, 1000);
  }

  // -- members -----------------------------------------------------------------------------

  async function refreshMembers() {
    const roomId = state.roomId;
    if (roomId === null) return;
    try {
      const data = await api("GET", "/rooms/" + roomId + "/members");
      if (roomId !== state.roomId) return;
      const members = data.members.slice().sort((a, b) => Number(b.online) - Number(a.online));
      clear(el.memberList);
      state.memberIds = new Set(members.map((m) => m.user.id));
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

  // -- websocket ---------------------------------------------------------------------------

  function wsSend(frame) {
    if (ws.socket && ws.ready && ws.socket.readyState === WebSocket.OPEN) {
      ws.socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function subscribe() {
    if (state.roomId === null) return;
    wsSend({ type: "subscribe", room_id: state.roomId, after: state.lastSeq });
  }

  function connect() {
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
      state.unsubscribing.clear();
      socket.send(JSON.stringify({ type: "auth", token: state.token }));
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
      if (event.code === 4001) {
        signedOut("Your session ended. Please sign in again.");
        return;
      }
      if (event.code === 1008) {
        // auth failed, or no longer a member: check the token and the rooms before trying again
        recheckThenReconnect();
        return;
      }
      scheduleReconnect();
    });
  }

  async function recheckThenReconnect() {
    try {
      await api("GET", "/me");
      await refreshRooms();
      if (state.roomId !== null && !state.joined.has(state.roomId)) closeRoom();
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // signed out already
    }
    scheduleReconnect();
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
    wsSend({ type: "ping" });
  }

  setInterval(heartbeat, PING_EVERY_MS);

  function scheduleReconnect() {
    ws.attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (ws.attempt - 1));
    const delay = Math.round(base / 2 + Math.random() * base / 2);
    setStatus("Offline — reconnecting in " + Math.ceil(delay / 1000) + " s", "offline");
    clearTimeout(ws.timer);
    ws.timer = setTimeout(connect, delay);
  }

  function disconnect() {
    ws.wanted = false;
    ws.ready = false;
    clearTimeout(ws.timer);
    if (ws.socket) {
      const s = ws.socket;
      ws.socket = null;
      s.close(1000, "bye");
    }
  }

  function onFrame(frame) {
    ws.awaitingPong = false; // any frame shows the link is alive
    switch (frame.type) {
      case "hello":
        ws.ready = true;
        ws.attempt = 0;
        setStatus("Live", "live");
        subscribe();
        for (const entry of state.pending.values()) trySend(entry);
        refreshMembers();
        break;
      case "subscribed":
        break;
      case "message":
        receiveMessage(frame.message);
        break;
      case "ack":
        if (frame.message) receiveMessage(frame.message);
        break;
      case "gap":
        if (frame.room_id === state.roomId) refetch().catch(() => {});
        break;
      case "typing":
        if (frame.room_id === state.roomId && frame.user && (!state.user || frame.user.id !== state.user.id)) {
          state.typers.set(frame.user.id, { name: frame.user.username, until: Date.now() + TYPING_SHOW_MS });
          renderTyping();
        }
        break;
      case "unsubscribed":
        if (state.unsubscribing.delete(frame.room_id)) break; // the answer to our own unsubscribe
        if (frame.room_id === state.roomId) {
          // we left the room elsewhere
          state.joined.delete(frame.room_id);
          closeRoom();
          refreshRooms().catch(() => {});
        }
        break;
      case "error": {
        const entry = typeof frame.ref === "string" ? state.pending.get(frame.ref) : undefined;
        if (entry) {
          if (frame.code === "rate_limited") {
            setTimeout(() => trySend(entry), 1000);
          } else {
            failSend(entry, frame.message || frame.code);
          }
        }
        break;
      }
      default:
        break;
    }
  }

  // -- start -------------------------------------------------------------------------------

  async function start() {
    let token = null;
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      token = null;
    }
    if (!token) {
      showAuth();
      return;
    }
    state.token = token;
    try {
      const data = await api("GET", "/me");
      await signedIn(data.user);
    } catch (err) {
      if (err instanceof ApiError) showAuth();
      else showAuth("Cannot reach the server.");
    }
  }

  start();
})();
