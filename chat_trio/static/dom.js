// DOM helpers shared by every view. User text only ever enters the page through textContent.

export const $ = (id) => document.getElementById(id);

export function node(tag, className, text) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text !== undefined && text !== null) n.textContent = String(text);
  return n;
}

export function button(label, className, onClick) {
  const b = node("button", className, label);
  b.type = "button";
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

export function clear(parent) {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
}

export function timeLabel(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const now = new Date();
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return hm;
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm;
}

export function scrollToBottom() {
  const scroller = $("message-scroller");
  scroller.scrollTop = scroller.scrollHeight;
}

export function showError(err) {
  $("send-error").textContent = err && err.message ? err.message : "Something went wrong.";
}

const connStatus = $("conn-status");

export function setStatus(text, kind) {
  connStatus.textContent = text;
  connStatus.dataset.kind = kind || "";
}
