// Editing and deleting messages: my own (↑ in an empty composer edits my last one, Escape
// cancels), and anyone's for a moderator. This module only asks the server; the edit and
// delete entries it answers with change the page as they do on every other device.
import { api, describe } from "./api.js";
import { txnId } from "./composer.js";
import { $, button, node } from "./dom.js";
import { actions, state } from "./state.js";

const el = {
  messages: $("messages"),
  input: $("message-input"),
};

// The Edit / Delete buttons of a text entry (Delete on others' messages shows for moderators
// only: `#messages.can-moderate`, set from the member list).
export function messageActions(li, mine) {
  const row = node("div", "message-actions");
  if (mine) row.append(labelled(button("Edit", "link", () => startEdit(li)), "Edit message"));
  const del = labelled(button("Delete", "link", () => confirmDelete(li, row)), "Delete message");
  if (!mine) del.classList.add("moderator-only");
  row.append(del);
  return row;
}

function labelled(b, label) {
  b.setAttribute("aria-label", label);
  return b;
}

// A deleted message can no longer be edited or deleted.
export function closeActions(li) {
  for (const n of li.querySelectorAll(".edit-form, .message-actions, .delete-confirm")) n.remove();
  const text = li.querySelector(".message-text");
  if (text) text.hidden = false;
}

function path(li) {
  return "/rooms/" + state.roomId + "/messages/" + Number(li.dataset.seq);
}

// -- deleting ----------------------------------------------------------------------------

function confirmDelete(li, row) {
  if (li.querySelector(".delete-confirm")) return;
  const box = node("div", "delete-confirm");
  box.setAttribute("role", "alert");
  const error = node("p", "error");
  const no = button("Cancel", "secondary", () => {
    box.remove();
    row.hidden = false;
  });
  const yes = button("Delete", "danger", async () => {
    yes.disabled = true;
    try {
      const data = await api("DELETE", path(li));
      actions.received(data.message);
      el.input.focus();
    } catch (err) {
      error.textContent = describe(err);
      yes.disabled = false;
    }
  });
  box.append(node("span", null, "Delete this message for everyone?"), yes, no, error);
  row.hidden = true;
  li.append(box);
  yes.focus();
}

// -- editing -----------------------------------------------------------------------------

function startEdit(li) {
  const open = li.querySelector(".edit-form textarea");
  if (open) {
    open.focus();
    return;
  }
  const shown = li.querySelector(".message-text");
  const original = shown.textContent;
  const form = node("form", "edit-form");
  const area = node("textarea", "edit-input");
  area.value = original;
  area.maxLength = 4000;
  area.rows = Math.min(6, original.split("\n").length + 1);
  area.setAttribute("aria-label", "Edit message");
  const error = node("p", "error");
  error.setAttribute("role", "alert");
  const txn = txnId(); // one edit, repeated harmlessly if the answer is lost
  const close = () => {
    form.remove();
    shown.hidden = false;
    el.input.focus();
  };
  form.append(area, node("p", "hint", "Enter to save · Escape to cancel"),
    button("Save", "", () => form.requestSubmit()), button("Cancel", "secondary", close), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = area.value;
    if (text === original) return close();
    if (!text.trim()) {
      error.textContent = "A message cannot be empty: delete it instead.";
      return;
    }
    try {
      const data = await api("PATCH", path(li), { text, txn_id: txn });
      close();
      actions.received(data.message);
    } catch (err) {
      error.textContent = describe(err);
    }
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  shown.hidden = true;
  shown.after(form);
  area.focus();
  area.setSelectionRange(original.length, original.length);
}

// ↑ in the empty composer edits my newest message that can still be edited.
el.input.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowUp" || el.input.value !== "" || event.isComposing) return;
  const mine = el.messages.querySelectorAll("li.message.mine:not(.deleted):not(.pending)");
  if (!mine.length) return;
  event.preventDefault();
  const li = mine[mine.length - 1];
  li.scrollIntoView({ block: "nearest" });
  startEdit(li);
});
