// Server administration, shown to admins: find users by name prefix, reset a password, make or
// unmake an admin, deactivate (with the erase choice, confirmed); create a user.
import { api, describe } from "./api.js";
import { $, button, clear, node, timeLabel } from "./dom.js";
import { state } from "./state.js";

const PAGE_SIZE = 100;

const el = {
  search: $("user-search"),
  query: $("user-query"),
  list: $("user-list"),
  more: $("users-more"),
  error: $("admin-error"),
  done: $("admin-done"),
  createForm: $("create-user-form"),
  newUsername: $("new-username"),
  newPassword: $("new-password"),
  newAdmin: $("new-admin"),
  createError: $("create-user-error"),
};

let after = 0; // the last user id listed: where "More users" continues

export function showAdmin() {
  el.error.textContent = "";
  el.done.textContent = "";
  loadUsers(true);
}

async function loadUsers(fromStart) {
  if (fromStart) {
    after = 0;
    clear(el.list);
  }
  try {
    const q = el.query.value.trim();
    const data = await api("GET", "/admin/users?limit=" + PAGE_SIZE + "&after=" + after
      + (q ? "&q=" + encodeURIComponent(q) : ""));
    for (const user of data.users) el.list.append(userRow(user));
    if (data.users.length) after = data.users[data.users.length - 1].id;
    el.more.hidden = !data.has_more;
  } catch (err) {
    el.error.textContent = describe(err);
  }
}

el.search.addEventListener("submit", (event) => {
  event.preventDefault();
  loadUsers(true);
});
el.more.addEventListener("click", () => loadUsers(false));

function userRow(user) {
  const li = node("li", "row");
  li.dataset.userId = String(user.id);
  const main = node("div", "row-main");
  main.append(node("strong", "", user.username));
  if (user.admin) main.append(node("span", "badge", "admin"));
  if (user.deactivated) main.append(node("span", "badge muted", "deactivated"));
  main.append(node("div", "hint", "Joined " + timeLabel(user.created_at)
    + (user.last_seen_at ? " · last seen " + timeLabel(user.last_seen_at) : "")));
  const tools = node("div", "row-actions");
  li.append(main, tools);
  if (!user.deactivated) showTools(tools, user);
  return li;
}

function showTools(tools, user) {
  clear(tools);
  const self = state.user && state.user.id === user.id;
  tools.append(button("Reset password", "link", () => askPassword(tools, user)));
  tools.append(button(user.admin ? "Remove admin" : "Make admin", "link",
    () => act("PUT", "/admin/users/" + user.id + "/admin", { admin: !user.admin },
      user.username + (user.admin ? " is no longer an admin." : " is now an admin."))));
  if (!self) tools.append(button("Deactivate…", "link", () => askDeactivate(tools, user)));
}

function askPassword(tools, user) {
  clear(tools);
  const input = node("input");
  input.type = "password";
  input.autocomplete = "new-password";
  input.maxLength = 1024;
  input.setAttribute("aria-label", "New password for " + user.username);
  tools.append(input, button("Set password", "", async () => {
    await act("PUT", "/admin/users/" + user.id + "/password", { new_password: input.value },
      user.username + "'s password was reset; their sessions were signed out.");
  }), button("Cancel", "secondary", () => showTools(tools, user)));
  input.focus();
}

function askDeactivate(tools, user) {
  clear(tools);
  const erase = node("input");
  erase.type = "checkbox";
  const label = node("label", "check");
  label.append(erase, " Also erase every message they wrote");
  tools.append(node("p", "hint", "Deactivate " + user.username + "? They are signed out, removed from every"
    + " room and cannot log in again. This cannot be undone."), label);
  tools.append(button("Deactivate " + user.username, "danger", () =>
    act("POST", "/admin/users/" + user.id + "/deactivate", { erase: erase.checked },
      user.username + " was deactivated.")),
  button("Cancel", "secondary", () => showTools(tools, user)));
}

async function act(method, path, body, done) {
  el.error.textContent = "";
  el.done.textContent = "";
  try {
    await api(method, path, body);
    el.done.textContent = done;
  } catch (err) {
    el.error.textContent = describe(err);
  }
  loadUsers(true);
}

el.createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  el.createError.textContent = "";
  const username = el.newUsername.value.trim();
  if (!username || !el.newPassword.value) {
    el.createError.textContent = "Give a username and a password.";
    return;
  }
  try {
    const body = { username, password: el.newPassword.value, admin: el.newAdmin.checked };
    const data = await api("POST", "/admin/users", body);
    el.newUsername.value = "";
    el.newPassword.value = "";
    el.newAdmin.checked = false;
    el.done.textContent = "Created " + data.user.username + ".";
    loadUsers(true);
  } catch (err) {
    el.createError.textContent = describe(err);
  }
});
