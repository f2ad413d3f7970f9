/*
 * SelfieLessActs single-page app.
 *
 * Views (chosen from the URL hash, so the back button and bookmarks work):
 *   #/              categories with their act counts; add and remove categories
 *   #/c/NAME[/P]    the acts of one category, newest first, page P
 *   #/upload[/NAME] upload an act (NAME preselects the category)
 *   #/account       sign up, use an existing username, remove the account
 *
 * Everything goes through the public REST API (same origin, /api/v1/...) that the gateway routes
 * to the users and acts services. User-supplied text is only ever inserted with textContent.
 */
"use strict";

const API = "/api/v1";
const PAGE_SIZE = 20;             // the range API allows up to 100 per request; 20 keeps pages light
const USER_KEY = "selfieless.username";
const LAST_ID_KEY = "selfieless.lastActId";
const MAX_UPLOAD_BYTES = 12 * 1024 * 1024;  // base64 grows by 4/3; the gateway refuses bodies over 16 MiB
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/* ------------------------------------------------------------------ DOM helpers */

// el("p", {class: "x", "data-testid": "y", onclick: fn}, "text", child...) -> element.
// Children that are strings become text nodes, so user data can never turn into markup.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function view() {
  return document.getElementById("view");
}

// A short confirmation in the live region under the header; hides itself after a while.
let flashTimer = 0;
function flash(message) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { box.hidden = true; }, 5000);
}

function loading(what) {
  return el("p", {class: "loading", "data-testid": "loading", role: "status"}, `Loading ${what}…`);
}

// An error with the API's own words, and a way to try again when that makes sense.
function errorBox(message, retry) {
  return el("div", {class: "error", role: "alert", "data-testid": "error"},
    el("p", {}, message),
    retry ? el("button", {type: "button", class: "secondary", onclick: retry}, "Try again") : null);
}

function emptyState(testid, title, ...more) {
  return el("div", {class: "empty", "data-testid": testid}, el("p", {class: "empty-title"}, title), ...more);
}

/* ------------------------------------------------------------------ API access */

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Calls the API; resolves to {status, data} (data is null for 204), rejects with an ApiError
// carrying the API's "error" text, which is written for humans and shown as is.
async function api(method, path, body) {
  const init = {method, headers: {Accept: "application/json"}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (e) {
    throw new ApiError(0, "Cannot reach the server. Check your connection and try again.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = parseJson(text); } catch (e) { data = null; }
  }
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error
      : `The server answered ${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, message);
  }
  return {status: response.status, data};
}

// actIds go up to 2^63-1, beyond what a JS number holds exactly; upvoting or deleting a rounded
// id would hit the wrong act (or none). So keep every actId as its exact digit string, using the
// reviver's source text where the browser provides it.
function parseJson(text) {
  return JSON.parse(text, (key, value, context) => {
    if (key === "actId" && typeof value === "number") {
      return context && typeof context.source === "string" ? context.source : String(value);
    }
    return value;
  });
}

/* ------------------------------------------------------------------ small pure helpers */

function currentUser() {
  return localStorage.getItem(USER_KEY) || "";
}

function setCurrentUser(name) {
  if (name) localStorage.setItem(USER_KEY, name);
  else localStorage.removeItem(USER_KEY);
  showCurrentUser();
}

function showCurrentUser() {
  const name = currentUser();
  document.querySelector("[data-testid=current-user]").textContent =
    name ? `Signed in as ${name}` : "Not signed up";
}

function categoryHash(name, page) {
  return `#/c/${encodeURIComponent(name)}` + (page > 1 ? `/${page}` : "");
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

const pad2 = (n) => String(n).padStart(2, "0");

// The course's timestamp format: DD-MM-YYYY:SS-MM-HH (seconds, minutes, hours: in that order).
function courseTimestamp(date) {
  return `${pad2(date.getDate())}-${pad2(date.getMonth() + 1)}-${date.getFullYear()}:` +
    `${pad2(date.getSeconds())}-${pad2(date.getMinutes())}-${pad2(date.getHours())}`;
}

// "09-04-2019:05-30-14" -> {text: "9 Apr 2019, 14:30:05", iso: "2019-04-09T14:30:05"};
// anything else is shown as it came, since the API returns timestamps exactly as uploaded.
function readableTimestamp(stamp) {
  const m = /^(\d{2})-(\d{2})-(\d{4}):(\d{2})-(\d{2})-(\d{2})$/.exec(stamp || "");
  if (!m) return {text: String(stamp), iso: null};
  const [, day, month, year, sec, min, hour] = m;
  const name = MONTHS[Number(month) - 1] || month;
  return {
    text: `${Number(day)} ${name} ${year}, ${hour}:${min}:${sec}`,
    iso: `${year}-${month}-${day}T${hour}:${min}:${sec}`,
  };
}

// Epoch milliseconds, as course clients do, but never the same id twice from this browser
// (two uploads within one millisecond, or a clock that stepped back).
function nextActId() {
  const last = Number(localStorage.getItem(LAST_ID_KEY) || 0);
  return Math.max(Date.now(), last + 1);
}

// The API stores images as bare base64 with no type; look at the first bytes to label the
// data: URL. Browsers sniff raster images anyway, so an unknown kind falls back to a generic type.
function sniffImageType(b64) {
  let head = b64.slice(0, 16);
  head = head.slice(0, head.length - (head.length % 4));
  let bytes;
  try {
    bytes = Array.from(atob(head), (c) => c.charCodeAt(0));
  } catch (e) {
    return "image/png";
  }
  const startsWith = (...sig) => sig.every((b, i) => bytes[i] === b);
  if (startsWith(0x89, 0x50, 0x4e, 0x47)) return "image/png";
  if (startsWith(0xff, 0xd8, 0xff)) return "image/jpeg";
  if (startsWith(0x47, 0x49, 0x46, 0x38)) return "image/gif";
  if (startsWith(0x52, 0x49, 0x46, 0x46) && String.fromCharCode(...bytes.slice(8, 12)) === "WEBP") return "image/webp";
  if (startsWith(0x42, 0x4d)) return "image/bmp";
  return "image/jpeg";
}

function imageSource(imgB64) {
  const clean = String(imgB64).replace(/\s+/g, "");  // clients wrap base64 every 76 characters
  return `data:${sniffImageType(clean)};base64,${clean}`;
}

// The file's bytes as bare base64 (FileReader gives a data: URL; the API wants no prefix).
function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new Error("Could not read the file."));
    reader.readAsDataURL(file);
  });
}

/* ------------------------------------------------------------------ routing */

// Every navigation gets a number; a view whose data arrives after the user has moved on
// checks it and drops the stale result instead of drawing over the newer view.
let navigation = 0;

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/");
  try {
    const name = parts[1] !== undefined ? decodeURIComponent(parts[1]) : "";
    if (parts[0] === "") return {view: homeView};
    if (parts[0] === "c" && name) return {view: categoryView, name, page: Math.max(1, parseInt(parts[2], 10) || 1)};
    if (parts[0] === "upload") return {view: uploadView, name};
    if (parts[0] === "account") return {view: accountView};
  } catch (e) { /* malformed %-escape: fall through to "not found" */ }
  return {view: notFoundView};
}

// Draws the view for the current hash. focus: move keyboard/screen-reader focus to the new view
// (on navigation, not on refreshes after an action, which would lose the reader's place).
function render(focus) {
  const token = ++navigation;
  const route = parseRoute(location.hash);
  const main = view();
  main.replaceChildren();
  const isCurrent = () => token === navigation;
  route.view(main, route, isCurrent).catch((e) => {
    if (isCurrent()) main.replaceChildren(errorBox(e.message || String(e), () => render(false)));
  });
  // Mark the menu entry of this view; a category page belongs under "Categories".
  const first = location.hash.replace(/^#\/?/, "").split("/")[0];
  const section = "#/" + (first === "c" ? "" : first);
  document.querySelectorAll("nav a").forEach((a) => {
    const active = a.getAttribute("href") === section;
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  if (focus) {
    // A new view starts at the top (the pager sits at the bottom of a long page).
    window.scrollTo(0, 0);
    main.focus({preventScroll: true});
  }
}

async function notFoundView(main) {
  main.append(el("h1", {}, "Page not found"),
    el("p", {}, el("a", {href: "#/"}, "Back to the categories")));
}

/* ------------------------------------------------------------------ home: categories */

async function homeView(main, route, isCurrent) {
  const formError = el("div", {"data-testid": "add-category-error"});
  const input = el("input", {id: "add-category-name", name: "category", required: true, autocomplete: "off",
    "data-testid": "add-category-name", placeholder: "e.g. Nature"});
  const form = el("form", {class: "inline-form", "data-testid": "add-category-form", onsubmit: onAdd},
    el("label", {for: "add-category-name"}, "New category"),
    el("div", {class: "row"}, input,
      el("button", {type: "submit", "data-testid": "add-category-submit"}, "Add")),
    formError);
  const list = el("section", {"aria-label": "Categories", "data-testid": "categories"}, loading("categories"));
  main.append(el("h1", {}, "Categories"), form, list);

  async function onAdd(event) {
    event.preventDefault();
    const name = input.value.trim();
    formError.replaceChildren();
    if (!name) return;
    try {
      await api("POST", "/categories", [name]);
      input.value = "";
      flash(`Category “${name}” added.`);
      await fillList();
    } catch (e) {
      formError.replaceChildren(errorBox(e.message));
    }
  }

  async function fillList() {
    let result;
    try {
      result = await api("GET", "/categories");
    } catch (e) {
      if (isCurrent()) list.replaceChildren(errorBox(e.message, fillList));
      return;
    }
    if (!isCurrent()) return;
    const counts = result.status === 204 || !result.data ? {} : result.data;
    const names = Object.keys(counts).sort((a, b) => a.localeCompare(b));
    if (names.length === 0) {
      list.replaceChildren(emptyState("categories-empty", "No categories yet.",
        el("p", {}, "Add the first one above, then upload a good deed to it.")));
      return;
    }
    list.replaceChildren(el("ul", {class: "categories", "data-testid": "category-list"},
      names.map((name) => categoryItem(name, counts[name], fillList))));
  }

  await fillList();
}

function categoryItem(name, count, refresh) {
  async function onRemove() {
    const what = count ? ` and its ${plural(count, "act")}` : "";
    if (!confirm(`Remove the category “${name}”${what}? This cannot be undone.`)) return;
    try {
      await api("DELETE", `/categories/${encodeURIComponent(name)}`);
      flash(`Category “${name}” removed.`);
    } catch (e) {
      flash(`Could not remove “${name}”: ${e.message}`);
    }
    await refresh();
  }
  return el("li", {class: "category", "data-testid": "category-item", "data-category": name},
    el("a", {href: categoryHash(name), "data-testid": "category-link"},
      el("span", {class: "category-name"}, name),
      el("span", {class: "badge", "data-testid": "category-count", "aria-label": plural(count, "act")}, String(count))),
    el("button", {type: "button", class: "danger small", "data-testid": "category-delete",
      "aria-label": `Remove category ${name}`, onclick: onRemove}, "Remove"));
}

/* ------------------------------------------------------------------ one category: acts, paged */

async function categoryView(main, route, isCurrent) {
  const {name} = route;
  const summary = el("p", {class: "summary", "data-testid": "act-total"});
  const body = el("section", {"aria-label": `Acts in ${name}`}, loading("acts"));
  main.append(
    el("p", {class: "back"}, el("a", {href: "#/"}, "← All categories")),
    el("div", {class: "title-row"},
      el("h1", {"data-testid": "category-title"}, name),
      el("a", {class: "button", href: `#/upload/${encodeURIComponent(name)}`, "data-testid": "upload-here"}, "Upload here")),
    summary, body);

  // Always size + range (never the plain listing): the plain listing refuses categories of
  // 100 acts or more, and ranges give us paging for free.
  for (let attempt = 0; attempt < 3; attempt++) {
    const size = await api("GET", `/categories/${encodeURIComponent(name)}/acts/size`);
    if (!isCurrent()) return;
    if (size.status === 204) {
      body.replaceChildren(emptyState("category-missing", `There is no category called “${name}”.`,
        el("p", {}, "It may have been removed. ", el("a", {href: "#/"}, "See all categories"))));
      return;
    }
    const total = size.data[0];
    if (total === 0) {
      summary.textContent = "No acts yet";
      body.replaceChildren(emptyState("acts-empty", "No acts in this category yet.",
        el("p", {}, el("a", {href: `#/upload/${encodeURIComponent(name)}`}, "Upload the first good deed"))));
      return;
    }
    const pages = Math.ceil(total / PAGE_SIZE);
    const page = Math.min(route.page, pages);
    if (page !== route.page) history.replaceState(null, "", categoryHash(name, page));
    const start = (page - 1) * PAGE_SIZE + 1;
    const end = Math.min(start + PAGE_SIZE - 1, total);
    const acts = await api("GET", `/categories/${encodeURIComponent(name)}/acts?start=${start}&end=${end}`);
    if (!isCurrent()) return;
    // 204 here means acts were deleted between the two requests: ask for the size again.
    if (acts.status === 204) continue;
    summary.textContent = `${plural(total, "act")} · page ${page} of ${pages}`;
    const list = el("ol", {class: "acts", start, "data-testid": "act-list"}, acts.data.map((act) => el("li", {}, actCard(act))));
    if (pages > 1) body.replaceChildren(list, pager(name, page, pages));
    else body.replaceChildren(list);
    return;
  }
  body.replaceChildren(errorBox("The acts kept changing while loading.", () => render(false)));
}

function pager(name, page, pages) {
  const go = (p) => () => { location.hash = categoryHash(name, p); };
  const button = (label, text, target, testid) => el("button", {type: "button", class: "secondary",
    "aria-label": label, "data-testid": testid, disabled: target === page, onclick: go(target)}, text);
  return el("nav", {class: "pager", "aria-label": "Pages", "data-testid": "pager"},
    button("First page", "«", 1, "page-first"),
    button("Previous page", "‹ Prev", Math.max(1, page - 1), "page-prev"),
    el("span", {class: "page-info", "data-testid": "page-info", "aria-live": "polite"}, `${page} / ${pages}`),
    button("Next page", "Next ›", Math.min(pages, page + 1), "page-next"),
    button("Last page", "»", pages, "page-last"));
}

function actCard(act) {
  const time = readableTimestamp(act.timestamp);
  const count = el("span", {class: "count", "data-testid": "act-upvotes"}, String(act.upvotes));
  const word = el("span", {}, act.upvotes === 1 ? "upvote" : "upvotes");
  const problem = el("div", {class: "card-error", "data-testid": "act-error"});
  const image = el("img", {src: imageSource(act.imgB64), alt: act.caption ? `Photo: ${act.caption}` : `Photo by ${act.username}`,
    loading: "lazy", decoding: "async", "data-testid": "act-image"});
  // A broken image (not really an image, truncated upload) gets a readable placeholder instead
  // of the browser's broken-image icon.
  image.addEventListener("error", () => image.replaceWith(
    el("div", {class: "no-image", "data-testid": "act-image-broken"}, "Image cannot be shown")));

  const upvote = el("button", {type: "button", class: "upvote", "data-testid": "act-upvote",
    "aria-label": `Upvote ${act.caption ? `“${act.caption}”` : "this act"} by ${act.username}`}, "▲ Upvote");
  upvote.addEventListener("click", async () => {
    upvote.disabled = true;  // one request at a time, so each click counts exactly once
    problem.replaceChildren();
    try {
      await api("POST", "/acts/upvote", [jsonActId(act.actId)]);
      act.upvotes += 1;
      count.textContent = String(act.upvotes);
      word.textContent = act.upvotes === 1 ? "upvote" : "upvotes";
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    } finally {
      upvote.disabled = false;
    }
  });

  const remove = el("button", {type: "button", class: "danger small", "data-testid": "act-delete",
    "aria-label": `Delete act by ${act.username}`}, "Delete");
  remove.addEventListener("click", async () => {
    if (!confirm("Delete this act? This cannot be undone.")) return;
    try {
      await api("DELETE", `/acts/${encodeURIComponent(act.actId)}`);
      flash("Act deleted.");
      render(false);
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    }
  });

  return el("article", {class: "act", "data-testid": "act-card", "data-act-id": act.actId},
    el("div", {class: "frame"}, image),
    el("div", {class: "act-body"},
      el("p", {class: "caption", "data-testid": "act-caption"}, act.caption || "(no caption)"),
      el("p", {class: "meta"},
        "by ", el("strong", {"data-testid": "act-author"}, act.username), " · ",
        el("time", {datetime: time.iso, title: act.timestamp, "data-testid": "act-time"}, time.text)),
      el("div", {class: "actions"},
        el("span", {class: "votes", "aria-live": "polite"}, count, " ", word),
        upvote, remove),
      problem));
}

// The upvote body takes an integer or a string of digits: send a number when it is exact.
function jsonActId(id) {
  const n = Number(id);
  return Number.isSafeInteger(n) ? n : String(id);
}

/* ------------------------------------------------------------------ upload */

async function uploadView(main, route, isCurrent) {
  main.append(el("h1", {}, "Upload a good deed"));
  const holder = el("div", {}, loading("categories"));
  main.append(holder);
  const result = await api("GET", "/categories");
  if (!isCurrent()) return;
  const names = Object.keys(result.status === 204 || !result.data ? {} : result.data).sort((a, b) => a.localeCompare(b));
  if (names.length === 0) {
    holder.replaceChildren(emptyState("upload-no-categories", "There are no categories to post to yet.",
      el("p", {}, el("a", {href: "#/"}, "Create a category first"))));
    return;
  }
  holder.replaceChildren(uploadForm(names, route.name));
}

function field(id, label, control, hint) {
  return el("div", {class: "field"}, el("label", {for: id}, label), control,
    hint ? el("p", {class: "hint", id: `${id}-hint`}, hint) : null);
}

function uploadForm(categories, preselect) {
  const file = el("input", {id: "upload-file", type: "file", accept: "image/*", required: true, "data-testid": "upload-file"});
  const preview = el("img", {class: "preview", alt: "Preview of the chosen photo", hidden: true, "data-testid": "upload-preview"});
  const caption = el("textarea", {id: "upload-caption", rows: 3, "data-testid": "upload-caption",
    placeholder: "What good deed did you do?"});
  const category = el("select", {id: "upload-category", required: true, "data-testid": "upload-category"},
    el("option", {value: ""}, "Choose a category"),
    categories.map((c) => el("option", {value: c, selected: c === preselect}, c)));
  const username = el("input", {id: "upload-username", required: true, autocomplete: "username",
    value: currentUser(), "data-testid": "upload-username", "aria-describedby": "upload-username-hint"});
  const submit = el("button", {type: "submit", "data-testid": "upload-submit"}, "Upload");
  const problem = el("div", {"data-testid": "upload-error"});

  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (preview.src) URL.revokeObjectURL(preview.src);  // free the previous pick's memory
    preview.hidden = !chosen;
    if (chosen) preview.src = URL.createObjectURL(chosen);
  });

  async function onSubmit(event) {
    event.preventDefault();
    problem.replaceChildren();
    const chosen = file.files[0];
    const user = username.value.trim();
    if (!chosen) return problem.replaceChildren(errorBox("Choose a photo first."));
    if (chosen.size > MAX_UPLOAD_BYTES) return problem.replaceChildren(errorBox("That photo is too large (12 MB at most)."));
    if (!category.value) return problem.replaceChildren(errorBox("Choose a category."));
    if (!user) return problem.replaceChildren(errorBox("Enter your username (sign up on the Account page)."));
    submit.disabled = true;
    submit.textContent = "Uploading…";
    try {
      const actId = nextActId();
      await api("POST", "/acts", {
        actId, username: user, timestamp: courseTimestamp(new Date()), caption: caption.value,
        categoryName: category.value, imgB64: await readAsBase64(chosen),
      });
      localStorage.setItem(LAST_ID_KEY, String(actId));
      flash("Uploaded. Thank you for your good deed!");
      location.hash = categoryHash(category.value);
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    } finally {
      submit.disabled = false;
      submit.textContent = "Upload";
    }
  }

  return el("form", {class: "card-form", "data-testid": "upload-form", onsubmit: onSubmit},
    field("upload-file", "Photo", file), preview,
    field("upload-caption", "Caption", caption),
    field("upload-category", "Category", category),
    field("upload-username", "Username", username, currentUser() ? "Remembered from sign-up on this device."
      : "Not signed up on this device yet: sign up on the Account page, or type your username."),
    problem, el("div", {class: "row"}, submit));
}

/* ------------------------------------------------------------------ account */

async function accountView(main) {
  main.append(el("h1", {}, "Account"));
  const name = currentUser();
  if (name) main.append(signedInPanel(name));
  main.append(signUpForm(), existingUserForm());
}

function signedInPanel(name) {
  const problem = el("div", {"data-testid": "account-error"});
  async function onRemove() {
    if (!confirm(`Remove the account “${name}”? Your acts stay online.`)) return;
    try {
      await api("DELETE", `/users/${encodeURIComponent(name)}`);
      setCurrentUser("");
      flash(`Account “${name}” removed.`);
      render(false);
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    }
  }
  function onForget() {
    setCurrentUser("");
    flash("This device no longer remembers your username.");
    render(false);
  }
  return el("section", {class: "card-form", "aria-label": "Your account", "data-testid": "account-panel"},
    el("p", {}, "Signed in on this device as ", el("strong", {"data-testid": "account-name"}, name), "."),
    el("div", {class: "row"},
      el("button", {type: "button", class: "secondary", "data-testid": "forget-user", onclick: onForget}, "Sign out"),
      el("button", {type: "button", class: "danger", "data-testid": "remove-account", onclick: onRemove}, "Remove account")),
    problem);
}

function signUpForm() {
  const username = el("input", {id: "signup-username", required: true, autocomplete: "username", "data-testid": "signup-username"});
  const password = el("input", {id: "signup-password", type: "password", required: true, autocomplete: "new-password",
    "data-testid": "signup-password"});
  const submit = el("button", {type: "submit", "data-testid": "signup-submit"}, "Sign up");
  const problem = el("div", {"data-testid": "signup-error"});

  async function onSubmit(event) {
    event.preventDefault();
    problem.replaceChildren();
    const name = username.value.trim();
    if (!name || !password.value) return;
    submit.disabled = true;
    try {
      // The API takes the SHA-1 hex digest, never the password itself.
      await api("POST", "/users", {username: name, password: await sha1Hex(password.value)});
      setCurrentUser(name);
      flash(`Welcome, ${name}! You can upload good deeds now.`);
      location.hash = "#/";
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    } finally {
      submit.disabled = false;
    }
  }

  return el("form", {class: "card-form", "data-testid": "signup-form", onsubmit: onSubmit},
    el("h2", {}, "Sign up"),
    field("signup-username", "Username", username),
    field("signup-password", "Password", password),
    problem, el("div", {class: "row"}, submit));
}

// No password check exists in the API, so "signing in" is just checking the name exists.
function existingUserForm() {
  const username = el("input", {id: "existing-username", required: true, autocomplete: "username",
    "data-testid": "existing-username"});
  const problem = el("div", {"data-testid": "existing-error"});

  async function onSubmit(event) {
    event.preventDefault();
    problem.replaceChildren();
    const name = username.value.trim();
    try {
      const result = await api("GET", "/users");
      const known = result.status === 200 && Array.isArray(result.data) && result.data.includes(name);
      if (!known) return problem.replaceChildren(errorBox(`There is no user called “${name}”.`));
      setCurrentUser(name);
      flash(`Signed in as ${name}.`);
      location.hash = "#/";
    } catch (e) {
      problem.replaceChildren(errorBox(e.message));
    }
  }

  return el("form", {class: "card-form", "data-testid": "existing-form", onsubmit: onSubmit},
    el("h2", {}, "Already signed up?"),
    field("existing-username", "Username", username),
    problem, el("div", {class: "row"}, el("button", {type: "submit", class: "secondary"}, "Use this username")));
}

/* ------------------------------------------------------------------ start */

window.addEventListener("hashchange", () => render(true));
window.addEventListener("storage", showCurrentUser);  // another tab signed up or out
showCurrentUser();
render(false);
