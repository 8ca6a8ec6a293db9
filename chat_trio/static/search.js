// Message search: GET /search over the rooms I am in (or the open one), newest first, each
// result with its matched words marked (text nodes and <mark>, from the code-point offsets the
// server gives) and a click that opens the room at that message, with what surrounds it.
import { api, describe } from "./api.js";
import { $, clear, node, timeLabel } from "./dom.js";
import { actions, state } from "./state.js";
import { showAround } from "./timeline.js";

const PAGE_SIZE = 20;

const el = {
  form: $("search-form"),
  input: $("search-input"),
  here: $("search-here"),
  panel: $("search-panel"),
  results: $("search-results"),
  empty: $("search-empty"),
  more: $("search-more"),
  error: $("search-error"),
  close: $("search-close"),
};

let query = null; // {q, roomId} of the results shown
let before = null; // the next page's cursor (a message id)
let ticket = 0; // only the latest answer is shown (answers may cross)

el.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = el.input.value.trim();
  if (!q) return closeSearch();
  query = { q, roomId: el.here.checked ? state.roomId : null };
  before = null;
  clear(el.results);
  search();
});

el.input.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeSearch();
});
el.more.addEventListener("click", () => search());
el.close.addEventListener("click", () => closeSearch());

export function closeSearch() {
  ticket += 1;
  query = null;
  el.input.value = "";
  el.panel.hidden = true;
  clear(el.results);
}

async function search() {
  const mine = ++ticket;
  let path = "/search?limit=" + PAGE_SIZE + "&q=" + encodeURIComponent(query.q);
  if (query.roomId !== null) path += "&room_id=" + query.roomId;
  if (before !== null) path += "&before=" + before;
  el.panel.hidden = false;
  el.error.textContent = "";
  el.more.disabled = true;
  try {
    const data = await api("GET", path);
    if (mine !== ticket) return;
    for (const r of data.results) el.results.append(renderResult(r));
    if (data.results.length) before = data.results[data.results.length - 1].message.id;
    el.more.hidden = !data.has_more;
    el.empty.hidden = el.results.childElementCount > 0;
  } catch (err) {
    if (mine === ticket) el.error.textContent = describe(err);
  } finally {
    el.more.disabled = false;
  }
}

function renderResult(r) {
  const m = r.message;
  const li = node("li", "search-result");
  const b = node("button", "search-hit");
  b.type = "button";
  b.dataset.roomId = String(m.room_id);
  b.dataset.seq = String(m.seq);
  const room = state.rooms.get(m.room_id);
  const head = node("span", "search-meta");
  head.append(node("span", "search-room", room ? room.name : "room " + m.room_id),
    node("span", "author", m.author ? m.author.username : ""), node("span", "time", timeLabel(m.created_at)));
  b.append(head, highlighted(m.text, r.highlights || []));
  b.addEventListener("click", () => jump(m).catch((err) => (el.error.textContent = describe(err))));
  li.append(b);
  return li;
}

// The text with each [start, end) range (in code points, not UTF-16 units) in a <mark>.
export function highlighted(text, ranges) {
  const points = Array.from(text);
  const out = node("span", "search-text");
  let at = 0;
  for (const [start, end] of ranges.slice().sort((x, y) => x[0] - y[0])) {
    if (start < at || end <= start || end > points.length) continue;
    if (start > at) out.append(points.slice(at, start).join(""));
    out.append(node("mark", null, points.slice(start, end).join("")));
    at = end;
  }
  if (at < points.length) out.append(points.slice(at).join(""));
  return out;
}

async function jump(m) {
  if (state.roomId !== m.room_id) await actions.openRoom(m.room_id);
  if (state.roomId === m.room_id) await showAround(m.seq);
}
