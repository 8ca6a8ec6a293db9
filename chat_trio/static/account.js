// My account: change the password, see and end sessions, download my data, and delete the
// account (with the choice to erase my messages, behind a confirmation).
import { api, describe, download } from "./api.js";
import { $, button, clear, node, timeLabel } from "./dom.js";
import { actions, state } from "./state.js";

const el = {
  passwordForm: $("password-form"),
  current: $("pw-current"),
  fresh: $("pw-new"),
  repeat: $("pw-repeat"),
  pwError: $("pw-error"),
  pwDone: $("pw-done"),
  sessionList: $("session-list"),
  sessionsError: $("sessions-error"),
  exportButton: $("export-button"),
  exportError: $("export-error"),
  deleteForm: $("delete-form"),
  deletePassword: $("delete-password"),
  deleteErase: $("delete-erase"),
  deleteError: $("delete-error"),
  deleteButton: $("delete-button"),
  deleteConfirm: $("delete-confirm"),
  deleteConfirmText: $("delete-confirm-text"),
  deleteYes: $("delete-yes"),
  deleteNo: $("delete-no"),
};

export function showAccount() {
  // password managers file a password under the account it belongs to
  for (const input of document.querySelectorAll(".account-username")) {
    input.value = state.user ? state.user.username : "";
  }
  for (const input of [el.current, el.fresh, el.repeat, el.deletePassword]) input.value = "";
  for (const p of [el.pwError, el.pwDone, el.sessionsError, el.exportError, el.deleteError]) p.textContent = "";
  el.deleteErase.checked = false;
  cancelDelete();
  refreshSessions();
}

// -- password ----------------------------------------------------------------------------

el.passwordForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  el.pwError.textContent = "";
  el.pwDone.textContent = "";
  if (!el.current.value) {
    el.pwError.textContent = "Enter your current password.";
    return;
  }
  if (el.fresh.value !== el.repeat.value) {
    el.pwError.textContent = "The two new passwords differ.";
    return;
  }
  try {
    await api("PUT", "/me/password", { password: el.current.value, new_password: el.fresh.value });
    for (const input of [el.current, el.fresh, el.repeat]) input.value = "";
    el.pwDone.textContent = "Password changed. Your other sessions have been signed out.";
    refreshSessions();
  } catch (err) {
    el.pwError.textContent = err.code === "invalid_credentials" ? "Your current password is wrong." : describe(err);
  }
});

// -- sessions ----------------------------------------------------------------------------

async function refreshSessions() {
  try {
    const data = await api("GET", "/me/sessions");
    renderSessions(data.sessions);
  } catch (err) {
    el.sessionsError.textContent = describe(err);
  }
}

// "Firefox on Linux" rather than a whole User-Agent; the whole one is the tooltip.
function clientName(ua) {
  if (!ua) return "Unknown client";
  const browser = [["Edg/", "Edge"], ["Firefox/", "Firefox"], ["Chrome/", "Chrome"], ["Safari/", "Safari"]]
    .find(([key]) => ua.includes(key));
  const os = [["Android", "Android"], ["iPhone", "iOS"], ["iPad", "iOS"], ["Windows", "Windows"],
    ["Mac OS X", "macOS"], ["Linux", "Linux"]].find(([key]) => ua.includes(key));
  if (!browser) return ua.length > 60 ? ua.slice(0, 59) + "…" : ua;
  return browser[1] + (os ? " on " + os[1] : "");
}

function renderSessions(sessions) {
  clear(el.sessionList);
  for (const s of sessions) {
    const li = node("li", s.current ? "row current" : "row");
    li.dataset.sessionId = String(s.id);
    const what = node("div", "row-main");
    const name = node("strong", "", clientName(s.client));
    name.title = s.client || "";
    what.append(name);
    if (s.current) what.append(node("span", "badge", "this session"));
    what.append(node("div", "hint", "Signed in " + timeLabel(s.created_at)
      + (s.last_seen_at ? " · last seen " + timeLabel(s.last_seen_at) : "")));
    li.append(what);
    if (!s.current) li.append(button("End session", "secondary", () => endSession(s)));
    el.sessionList.append(li);
  }
}

async function endSession(s) {
  el.sessionsError.textContent = "";
  try {
    await api("DELETE", "/me/sessions/" + encodeURIComponent(s.id));
  } catch (err) {
    el.sessionsError.textContent = describe(err);
  }
  refreshSessions();
}

// -- export ------------------------------------------------------------------------------

el.exportButton.addEventListener("click", async () => {
  el.exportError.textContent = "";
  el.exportButton.disabled = true;
  try {
    const blob = await download("/me/export");
    const url = URL.createObjectURL(blob);
    const a = node("a");
    a.href = url;
    a.download = "chat_trio-" + (state.user ? state.user.username : "me") + ".json";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    el.exportError.textContent = describe(err);
  } finally {
    el.exportButton.disabled = false;
  }
});

// -- deletion ----------------------------------------------------------------------------

function cancelDelete() {
  el.deleteConfirm.hidden = true;
  el.deleteButton.hidden = false;
}

el.deleteForm.addEventListener("submit", (event) => {
  event.preventDefault();
  el.deleteError.textContent = "";
  if (!el.deletePassword.value) {
    el.deleteError.textContent = "Enter your password to delete the account.";
    return;
  }
  el.deleteConfirmText.textContent = el.deleteErase.checked
    ? "Your account will be closed and every message you wrote erased from every room. This cannot be undone."
    : "Your account will be closed; your messages stay, under your name. This cannot be undone.";
  el.deleteButton.hidden = true;
  el.deleteConfirm.hidden = false;
  el.deleteNo.focus();
});

el.deleteNo.addEventListener("click", cancelDelete);

el.deleteYes.addEventListener("click", async () => {
  el.deleteYes.disabled = true;
  try {
    await api("DELETE", "/me", { password: el.deletePassword.value, erase: el.deleteErase.checked });
    actions.signedOut("Your account has been deleted.");
  } catch (err) {
    cancelDelete();
    el.deleteError.textContent = err.code === "invalid_credentials" ? "Wrong password." : describe(err);
  } finally {
    el.deleteYes.disabled = false;
  }
});
