// tokenbroker console: a small page over the broker's documented API
// (docs/openapi.yaml). Plain ES module, no framework, no build step.
//
// Safety rules kept throughout this file:
//   - every string that comes from the broker or a vendor (user names, site
//     names, error messages) reaches the page as a text node, never as HTML;
//   - the JWT lives in sessionStorage (this tab only) and goes only into the
//     Authorization header of same-origin API calls;
//   - the only navigation away is to the http(s) authorize URL the broker
//     returned, and the callback comes back here (returnTo).

const TOKEN_KEY = "tokenbroker.console.jwt";

// Where the API lives: the console is served at <base>/admin/, the API at
// <base>/v1/…, so both work behind a path prefix too.
const consoleURL = (() => {
  const u = new URL(".", document.baseURI);
  u.search = "";
  u.hash = "";
  return u.href;
})();
const apiBase = new URL("../", consoleURL).href;

const VENDOR_NAMES = { servicenow: "ServiceNow", confluence: "Confluence" };
const TYPE_NAMES = { supportAndTicketing: "Support and ticketing", knowledgeBase: "Knowledge base" };
const ERROR_CLASSES = {
  dead: "refused for good by the vendor",
  client_config: "OAuth client configuration problem",
  transient: "temporary failure, being retried",
};

// Connect asks for what the first connect needs: ServiceNow's instance URL
// (required); Confluence's site, only when the approving user reaches several.
const CONNECT_FIELDS = {
  servicenow: [{
    param: "instanceUrl", label: "Instance URL", type: "url", required: true,
    placeholder: "https://your-instance.service-now.com",
    hint: "The ServiceNow instance to connect; it must be on the broker's allowlist.",
  }],
  confluence: [{
    param: "site", label: "Site (optional)", type: "text", required: false,
    placeholder: "https://your-site.atlassian.net",
    hint: "Only needed when the approving user can reach several sites (site URL or cloud id).",
  }],
};

const RESULT_TEXT = {
  connected: (v) => `${v} is connected.`,
  reconnected: (v) => `${v} is reconnected: fresh tokens for the same integration.`,
  userChanged: (v) => `${v} now uses the newly approved user.`,
};

const HEALTH_TEXT = {
  healthy: "Healthy",
  degraded: "Degraded: refreshes are failing for now, calls still work",
  reconnect_required: "Reconnect required",
};

const ERROR_TEXT = {
  instance_mismatch: (v) => `${v} was not changed: the approving user belongs to another instance or site than the connected one.`,
  site_choice_required: (v) => `${v} was not connected: the approving user can reach several sites. Enter the site and connect again.`,
  access_denied: (v) => `${v} was not changed: access was not granted at the vendor.`,
  user_mismatch: (v) => `${v} was not changed: reconnect was approved by a different user. Use Change User to switch users.`,
  invalid_state: () => "That authorization had expired or was already used. Nothing was changed; please start again.",
  flow_not_bound: () => "That authorization was started in another browser, so nothing was changed. If you did not start it, someone may have tried to get access to your vendor account. Otherwise start again from this browser.",
  exchange_failed: (v) => `${v} refused the authorization. Nothing was changed; please try again.`,
  vendor_unavailable: (v) => `${v} could not be reached. Nothing was changed; try again in a moment.`,
  not_connected: (v) => `${v} is not connected (it may have been disconnected meanwhile).`,
  already_connected: (v) => `${v} is already connected.`,
  conflict: (v) => `${v} was changing at the same moment. Nothing was changed; please try again.`,
  invalid_instance: () => "That instance URL is not accepted.",
  invalid_return_to: () => `The broker does not allow returning to this console: add ${consoleURL} to BROKER_RETURN_URLS.`,
  client_not_configured: (v) => `No OAuth client is configured for ${v}.`,
  unauthorized: () => "The broker refused the token (expired or not valid). Paste a new one.",
  forbidden: () => "This token lacks the admin role needed to change integrations.",
};

const $ = (id) => document.getElementById(id);

// el builds an element. Children that are strings become text nodes; there
// is no path from data to HTML markup.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

const vendorName = (v) => VENDOR_NAMES[v] ?? String(v);
const safeId = (s) => String(s).toLowerCase().replace(/[^a-z0-9-]/g, "-");

// ---------------------------------------------------------------- token

let token = sessionStorage.getItem(TOKEN_KEY) || "";

function setToken(t) {
  token = t;
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// claims decodes the JWT payload for display only; the broker verifies it.
function claims(t) {
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const c = JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (ch) => ch.charCodeAt(0))));
    return c && typeof c === "object" ? c : {};
  } catch {
    return {};
  }
}

const looksLikeJWT = (t) => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(t);

// ---------------------------------------------------------------- messages

function showMessage(text, kind = "info") {
  const m = $("message");
  m.className = `message message-${kind}`;
  m.textContent = text;
}

function clearMessage() {
  const m = $("message");
  m.className = "message";
  m.textContent = "";
}

function errorText(err, vendor) {
  const v = vendorName(vendor ?? "");
  const f = ERROR_TEXT[err.code];
  const base = f ? f(v) : `The request failed${err.code ? ` (${err.code})` : ""}.`;
  // The broker's own message adds the detail (which host is not allowed, …).
  return err.message ? `${base} Detail: ${err.message}` : base;
}

class APIError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
    this.message = message || "";
  }
}

async function api(method, path) {
  let res;
  try {
    res = await fetch(new URL(path, apiBase), {
      method,
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store",
      // The API authenticates by the bearer token alone; the one cookie it
      // sets is the OAuth flow cookie, which the OAuth URL answer must be
      // able to store, so that the callback in this browser is accepted.
      credentials: "same-origin",
      redirect: "error",
    });
  } catch {
    throw new APIError(0, "network", "The broker could not be reached.");
  }
  if (res.status === 204) return null;
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const e = body && typeof body === "object" && body.error ? body.error : {};
    const err = new APIError(res.status, e.code, typeof e.message === "string" ? e.message : "");
    if (res.status === 401) tokenRefused();
    throw err;
  }
  return body;
}

// ---------------------------------------------------------------- dates

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

function relative(d) {
  const s = (d.getTime() - Date.now()) / 1000;
  const abs = Math.abs(s);
  if (abs < 60) return relFmt.format(Math.round(s), "second");
  if (abs < 3600) return relFmt.format(Math.round(s / 60), "minute");
  if (abs < 86400) return relFmt.format(Math.round(s / 3600), "hour");
  return relFmt.format(Math.round(s / 86400), "day");
}

function timeNode(iso) {
  const d = new Date(iso);
  if (!iso || Number.isNaN(d.getTime())) return document.createTextNode("—");
  return el("span", {}, el("time", { datetime: d.toISOString(), title: d.toISOString() }, dateFmt.format(d)),
    el("span", { class: "muted" }, ` (${relative(d)})`));
}

// ---------------------------------------------------------------- rendering

function fact(label, field, ...value) {
  return el("div", { class: "fact" }, el("dt", {}, label), el("dd", { "data-field": field }, ...value));
}

function renderCard(s) {
  const vendor = String(s.vendor);
  const name = vendorName(vendor);
  const id = safeId(vendor);
  const expired = s.integrated && (s.refreshTokenExpired === true || s.health === "reconnect_required");
  const degraded = s.integrated && !expired && s.health === "degraded";
  const state = !s.integrated ? "off" : expired ? "expired" : degraded ? "degraded" : "ok";
  const badge = { off: "Not connected", expired: "Reconnect needed", degraded: "Degraded", ok: "Connected" }[state];

  const card = el("article", {
    class: `card card-${state}`, "data-vendor": vendor, "data-integrated": String(!!s.integrated),
    "aria-labelledby": `card-${id}-title`,
  });
  card.append(el("header", { class: "card-head" },
    el("div", {},
      el("h3", { id: `card-${id}-title`, tabindex: "-1" }, name),
      el("p", { class: "type" }, TYPE_NAMES[s.type] ?? String(s.type ?? ""))),
    el("span", { class: `badge badge-${state}`, "data-field": "state" }, badge)));

  if (expired) {
    card.append(el("div", { class: "banner", role: "alert", "data-role": "expired-banner" },
      el("p", {}, el("strong", {}, "Reconnect needed. "),
        `${name} refused the stored refresh token for good, so calls through the broker fail until someone ` +
        "reconnects. User-level connections are kept."),
      el("button", {
        type: "button", class: "button danger", "data-action": "reconnect",
        onclick: (e) => startFlow(vendor, "reconnect", {}, e.currentTarget),
      }, "Reconnect")));
  }

  if (degraded) {
    card.append(el("div", { class: "banner banner-warn", role: "status", "data-role": "degraded-banner" },
      el("p", {}, el("strong", {}, "Having trouble. "),
        `The last refresh of ${name}'s token failed for a reason that may pass by itself` +
        (s.lastError?.class === "client_config" ? " once the OAuth client configuration is fixed" : "") +
        "; calls still use the current token. ",
        s.retryAt ? el("span", { "data-field": "retry-at" }, "Next attempt ", timeNode(s.retryAt), ".") : null)));
  }
  if (s.integrated && !expired && s.expiringSoon === true) {
    card.append(el("div", { class: "banner banner-warn", role: "status", "data-role": "expiring-banner" },
      el("p", {}, el("strong", {}, "Expiring soon. "),
        `${name}'s refresh token reaches its fixed lifetime `, timeNode(s.refreshTokenExpiresAt),
        ". Reconnect before then to avoid an interruption."),
      el("button", {
        type: "button", class: "button secondary", "data-action": "reconnect",
        onclick: (e) => startFlow(vendor, "reconnect", {}, e.currentTarget),
      }, "Reconnect now")));
  }

  const facts = el("dl", { class: "facts" });
  if (s.integrated) {
    const inst = s.instance ?? {};
    const where = [];
    if (inst.name) where.push(el("span", { class: "strong" }, String(inst.name)));
    if (inst.url) where.push(el("span", { class: inst.name ? "muted url" : "url" }, inst.name ? ` ${inst.url}` : String(inst.url)));
    if (!where.length && inst.cloudId) where.push(String(inst.cloudId));
    facts.append(fact(vendor === "confluence" ? "Site" : "Instance", "instance", where.length ? where : "—"));

    const u = s.connectedUser ?? {};
    facts.append(fact("Connected user", "user",
      el("span", { class: "strong", "data-field": "user-name" }, String(u.name || u.id || "—")),
      u.email ? el("span", { class: "muted", "data-field": "user-email" }, ` ${u.email}`) : null));
  }
  if (s.connectionDetails) {
    const { total = 0, connected = 0 } = s.connectionDetails;
    const text = total === 0 ? "None" : `${connected} of ${total} usable`;
    const stale = total - connected;
    facts.append(fact("User-level connections", "users", text,
      stale > 0 ? el("span", { class: "muted" }, ` (${stale} need to reconnect)`) : null));
  }
  if (s.integrated) {
    // expiringSoon is the broker's judgement (BROKER_EXPIRY_WARNING), not
    // the browser's clock.
    const exp = s.refreshTokenExpiresAt;
    const soon = exp && !expired && s.expiringSoon === true;
    facts.append(fact("Health", "health", HEALTH_TEXT[s.health] ?? (expired ? HEALTH_TEXT.reconnect_required : "—")));
    facts.append(fact("Refresh token expires", "expiry", exp ? timeNode(exp) : "Not known",
      soon ? el("span", { class: "warn-text" }, " Reconnect before then to avoid an interruption.") : null));
    facts.append(fact("Connected since", "connected-at", timeNode(s.connectedAt)));
    facts.append(fact("Last refresh", "last-refresh", s.lastRefreshAt ? timeNode(s.lastRefreshAt) : "Not yet"));
    if (s.lastError) {
      const le = s.lastError;
      facts.append(fact("Last error", "last-error",
        el("span", { class: "strong" }, ERROR_CLASSES[le.class] ?? String(le.class ?? "error")),
        le.at ? el("span", { class: "muted" }, " · ", timeNode(le.at)) : null,
        le.message ? el("span", { class: "error-detail" }, String(le.message)) : null));
    }
  }
  card.append(facts);
  if (s.integrated && (s.connectionDetails?.total ?? 0) > 0) card.append(renderUsers(vendor));

  if (s.integrated) card.append(renderActions(vendor, name, expired, s.connectionDetails));
  else card.append(renderConnect(vendor, name, id));
  return card;
}

// renderUsers lists the user-level connections (admin only, a page at a
// time) with their health and the time their refresh token has left.
function renderUsers(vendor) {
  const list = el("ul", { class: "users", "data-field": "user-list" });
  const more = el("button", { type: "button", class: "button secondary small", "data-action": "more-users", hidden: true }, "More");
  let cursor = "";
  const loadPage = async () => {
    try {
      const page = await api("GET", `v1/account/integrations/${encodeURIComponent(vendor)}/users?limit=50` +
        (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
      for (const u of page?.users ?? []) list.append(renderUser(u));
      cursor = page?.nextCursor ?? "";
      more.hidden = !cursor;
    } catch (err) {
      list.append(el("li", { class: "error-detail" }, errorText(err, vendor)));
    }
  };
  more.addEventListener("click", loadPage);
  const box = el("details", { class: "user-box" }, el("summary", { "data-action": "show-users" }, "User-level connections"), list, more);
  box.addEventListener("toggle", () => { if (box.open && !list.childElementCount) loadPage(); }, { once: false });
  return box;
}

function renderUser(u) {
  const expired = u.refreshTokenExpired === true || u.health === "reconnect_required";
  const cu = u.connectedUser ?? {};
  const parts = [el("span", { class: "strong" }, String(cu.name || cu.id || u.userId)),
    el("span", { class: "muted" }, ` (${u.userId})`), " · ",
    el("span", { "data-field": "user-health", class: expired ? "warn-text" : "" },
      HEALTH_TEXT[u.health] ?? (expired ? HEALTH_TEXT.reconnect_required : "—"))];
  if (u.refreshTokenExpiresAt && !expired) {
    parts.push(" · expires ", timeNode(u.refreshTokenExpiresAt));
    if (u.expiringSoon === true) parts.push(el("span", { class: "warn-text", "data-field": "user-expiring" }, " Expiring soon"));
  }
  return el("li", { "data-user": String(u.userId) }, ...parts);
}

function renderActions(vendor, name, expired, details) {
  const actions = el("div", { class: "actions" });
  if (!expired) {
    actions.append(el("button", {
      type: "button", class: "button secondary", "data-action": "reconnect",
      onclick: (e) => startFlow(vendor, "reconnect", {}, e.currentTarget),
    }, "Reconnect"));
  }
  actions.append(el("button", {
    type: "button", class: "button secondary", "data-action": "change-user",
    onclick: (e) => startFlow(vendor, "changeUser", {}, e.currentTarget),
  }, "Change User"));
  const disconnect = el("button", {
    type: "button", class: "button danger-outline", "data-action": "disconnect", "aria-expanded": "false",
  }, "Disconnect");
  actions.append(disconnect);

  const users = details?.total ?? 0;
  const confirmBtn = el("button", { type: "button", class: "button danger", "data-action": "confirm-disconnect" },
    `Yes, disconnect ${name}`);
  const cancelBtn = el("button", { type: "button", class: "button secondary", "data-action": "cancel-disconnect" }, "Cancel");
  const confirmId = `confirm-${safeId(vendor)}`;
  const confirm = el("div", { class: "confirm", id: confirmId, "data-role": "confirm", hidden: true },
    el("p", {}, el("strong", {}, `Disconnect ${name}? `),
      "The broker revokes the tokens where the vendor allows it and deletes the integration" +
      (users > 0 ? ` and its ${users} user-level connection${users === 1 ? "" : "s"}` : "") +
      ". Services calling it will get not_connected."),
    el("div", { class: "actions" }, confirmBtn, cancelBtn));
  disconnect.setAttribute("aria-controls", confirmId);

  const close = () => {
    confirm.hidden = true;
    disconnect.setAttribute("aria-expanded", "false");
    disconnect.focus();
  };
  disconnect.addEventListener("click", () => {
    confirm.hidden = false;
    disconnect.setAttribute("aria-expanded", "true");
    confirmBtn.focus();
  });
  cancelBtn.addEventListener("click", close);
  confirm.addEventListener("keydown", (e) => {
    if (e.key === "Escape") close();
  });
  confirmBtn.addEventListener("click", async () => {
    setBusy(true);
    try {
      await api("DELETE", `v1/account/integrations/${encodeURIComponent(vendor)}`);
      showMessage(`${name} is disconnected.`, "success");
      await load();
      document.getElementById(`card-${safeId(vendor)}-title`)?.focus();
    } catch (err) {
      showMessage(errorText(err, vendor), "error");
      setBusy(false);
    }
  });
  return el("div", {}, actions, confirm);
}

function renderConnect(vendor, name, id) {
  const fields = CONNECT_FIELDS[vendor] ?? [];
  const form = el("form", { class: "connect", "data-role": "connect-form", "aria-label": `Connect ${name}` });
  const inputs = [];
  for (const f of fields) {
    const inputId = `connect-${id}-${f.param}`;
    const hintId = `${inputId}-hint`;
    const input = el("input", {
      id: inputId, name: f.param, type: f.type, required: f.required, placeholder: f.placeholder,
      autocomplete: "off", spellcheck: "false", "aria-describedby": hintId,
      inputmode: f.type === "url" ? "url" : undefined,
    });
    inputs.push([f.param, input]);
    form.append(el("div", { class: "field" },
      el("label", { for: inputId }, `${name} ${f.label.charAt(0).toLowerCase()}${f.label.slice(1)}`),
      input,
      el("p", { class: "hint", id: hintId }, f.hint)));
  }
  const button = el("button", { type: "submit", class: "button primary", "data-action": "connect" }, `Connect ${name}`);
  form.append(button);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!form.reportValidity()) return;
    const extra = {};
    for (const [param, input] of inputs) extra[param] = input.value.trim();
    startFlow(vendor, "", extra, button);
  });
  return form;
}

// ---------------------------------------------------------------- actions

function setBusy(busy) {
  const list = $("integrations");
  list.setAttribute("aria-busy", String(busy));
  for (const b of list.querySelectorAll("button, input")) b.disabled = busy;
}

async function startFlow(vendor, action, extra, button) {
  clearMessage();
  setBusy(true);
  const q = new URLSearchParams({ flow: "app" });
  if (action) q.set("action", action);
  for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
  q.set("returnTo", consoleURL);
  try {
    const body = await api("GET", `v1/account/integrations/${encodeURIComponent(vendor)}/oauth2/url?${q}`);
    const target = new URL(body?.url ?? "");
    if (target.protocol !== "https:" && target.protocol !== "http:") throw new APIError(0, "", "unexpected authorize URL");
    showMessage(`Opening ${vendorName(vendor)} to approve…`, "info");
    window.location.assign(target.href);
  } catch (err) {
    showMessage(errorText(err, vendor), "error");
    setBusy(false);
    button?.focus();
  }
}

let loading = null;

async function load() {
  if (!token) return;
  loadAudit();
  const state = $("list-state");
  const list = $("integrations");
  state.textContent = "Loading…";
  list.setAttribute("aria-busy", "true");
  const run = (async () => {
    try {
      const all = await api("GET", "v1/account/integrations?includeUserLevelConnectionData=true");
      if (!Array.isArray(all)) throw new APIError(0, "", "unexpected answer from the broker");
      list.replaceChildren(...all.map(renderCard));
      state.textContent = all.length ? "" : "No vendors are configured.";
      list.dataset.loaded = String(Date.now());
    } catch (err) {
      list.replaceChildren();
      state.textContent = "";
      showMessage(errorText(err), "error");
    } finally {
      list.setAttribute("aria-busy", "false");
    }
  })();
  loading = run;
  await run;
  if (loading === run) loading = null;
}

// ---------------------------------------------------------------- audit trail

// What GET /v1/account/audit records (AuditAction in docs/openapi.yaml).
const AUDIT_ACTIONS = ["oauth.url_issued", "oauth.callback", "oauth.confirmation_accepted",
  "oauth.confirmation_rejected", "connection.disconnected", "connection.user_disconnected",
  "client_config.updated", "webhook.created", "webhook.deleted", "webhook.secret_rotated"];
const AUDIT_PAGE = 50;

let auditCursor = "";
// auditRun numbers the queries: the answer to one the filters have since
// replaced is dropped, so that rows of two filters never mix.
let auditRun = 0;

// loadAudit lists the account's audit trail, newest first; more follows the
// cursor, otherwise it starts over with the filters as they are now.
async function loadAudit(more = false) {
  if (!token) return;
  const rows = $("audit-rows");
  const state = $("audit-state");
  const moreBtn = $("audit-more");
  const run = ++auditRun;
  const q = new URLSearchParams({ limit: String(AUDIT_PAGE) });
  for (const f of ["vendor", "action"]) if ($(`audit-${f}`).value) q.set(f, $(`audit-${f}`).value);
  if (more && auditCursor) q.set("cursor", auditCursor);
  else {
    rows.replaceChildren();
    state.textContent = "Loading…";
  }
  moreBtn.disabled = true;
  try {
    const page = await api("GET", `v1/account/audit?${q}`);
    if (run !== auditRun) return;
    rows.append(...(page?.records ?? []).map(renderAuditRecord));
    auditCursor = page?.nextCursor ?? "";
    $("audit-filters").hidden = false;
    state.textContent = rows.childElementCount ? "" : "No records match.";
  } catch (err) {
    if (run !== auditRun) return;
    auditCursor = "";
    const forbidden = err.status === 403;
    $("audit-filters").hidden = forbidden;
    state.replaceChildren(forbidden
      ? el("span", { "data-role": "audit-forbidden" }, "Only admins can see the audit trail.")
      : el("span", { class: "error-detail" }, errorText(err)));
  } finally {
    if (run === auditRun) {
      $("audit-table").hidden = !rows.childElementCount;
      moreBtn.hidden = !auditCursor;
      moreBtn.disabled = false;
    }
  }
}

function renderAuditRecord(r) {
  const cell = (field, ...content) => el("td", { "data-field": field }, ...content);
  const note = (s) => (s ? el("span", { class: "muted" }, ` (${s})`) : null);
  const ok = r.result === "ok";
  return el("tr", { "data-record": String(r.id ?? "") },
    cell("time", timeNode(r.time)),
    cell("sub", String(r.actor?.sub || "—")),
    cell("action", String(r.action ?? ""), note(r.oauthAction)),
    cell("vendor", r.vendor ? vendorName(r.vendor) : "—"),
    cell("flow", String(r.flow || "—")),
    cell("target", String(r.targetUserId || "—")),
    cell("result", el("span", { class: ok ? undefined : "warn-text" }, String(r.result ?? "")), note(r.outcome)),
    cell("request-id", el("span", { class: "url" }, String(r.requestId || "—"))),
    cell("source", String(r.sourceAddress || "—")));
}

function clearAudit() {
  auditRun++;
  auditCursor = "";
  $("audit-rows").replaceChildren();
  $("audit-table").hidden = true;
  $("audit-more").hidden = true;
  $("audit-state").textContent = "";
}

function initAudit() {
  $("audit-vendor").append(...Object.entries(VENDOR_NAMES).map(([v, name]) => el("option", { value: v }, name)));
  $("audit-action").append(...AUDIT_ACTIONS.map((a) => el("option", { value: a }, a)));
  $("audit-filters").addEventListener("change", () => loadAudit());
  $("audit-filters").addEventListener("submit", (e) => e.preventDefault());
  $("audit-reload").addEventListener("click", () => loadAudit());
  $("audit-more").addEventListener("click", () => loadAudit(true));
}

// ---------------------------------------------------------------- session

function showSession() {
  const signedIn = !!token;
  $("token-panel").hidden = signedIn;
  $("vendors").hidden = !signedIn;
  $("audit").hidden = !signedIn;
  $("session").hidden = !signedIn;
  if (!signedIn) return;
  const c = claims(token);
  const who = $("who");
  const parts = [];
  if (c.account) parts.push(el("span", {}, "Account ", el("strong", {}, String(c.account))));
  if (c.sub) parts.push(el("span", {}, " · ", String(c.sub)));
  const roles = Array.isArray(c.roles) ? c.roles : [];
  if (!roles.includes("admin")) parts.push(el("span", { class: "warn-text" }, " · no admin role"));
  if (typeof c.exp === "number" && c.exp * 1000 < Date.now()) parts.push(el("span", { class: "warn-text" }, " · token expired"));
  who.replaceChildren(...parts);
}

function tokenRefused() {
  setToken("");
  $("integrations").replaceChildren();
  clearAudit();
  showSession();
}

// takeFragmentToken takes a token handed over as #token=… (the demo does
// this) out of the address bar and the history entry, and offers it: it is
// used only when the person clicks to accept it, after reading whose it is.
// Adopting it silently would let anyone send an admin a link that signs the
// console in to the sender's account, where the admin's next Connect would
// hand the sender the admin's vendor account.
function takeFragmentToken() {
  if (!location.hash.startsWith("#")) return;
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get("token");
  if (t === null) return;
  history.replaceState(history.state, "", location.pathname + location.search);
  if (!looksLikeJWT(t.trim())) {
    showMessage("The token in the link is not a JWT; paste one below.", "error");
    return;
  }
  offerToken(t.trim());
}

function offerToken(t) {
  const c = claims(t);
  const offer = $("token-offer");
  const accept = el("button", { type: "button", class: "button primary", "data-action": "accept-token" }, "Use this token");
  const dismiss = el("button", { type: "button", class: "button secondary", "data-action": "dismiss-token" }, "Dismiss");
  offer.replaceChildren(
    el("p", {}, "The link you opened carries a token for account ",
      el("strong", { "data-field": "offer-account" }, String(c.account ?? "?")), " as ",
      el("strong", { "data-field": "offer-sub" }, String(c.sub ?? "?")), "."),
    el("p", {}, "Use it only if you asked for this link: a token from someone else would make your changes, and your vendor approvals, in their account."),
    el("div", { class: "actions" }, accept, dismiss),
  );
  accept.addEventListener("click", () => {
    offer.hidden = true;
    offer.replaceChildren();
    setToken(t);
    clearMessage();
    showSession();
    load();
    showPending();
  });
  dismiss.addEventListener("click", () => {
    offer.hidden = true;
    offer.replaceChildren();
    showSession();
  });
  offer.hidden = false;
  accept.focus();
}

// takeCallbackResult shows the OAuth callback's outcome
// (?vendor=…&result=… or ?vendor=…&error=…) and removes it from the URL, so
// a reload does not show it again.
function takeCallbackResult() {
  const q = new URLSearchParams(location.search);
  if (!q.has("result") && !q.has("error")) return;
  const vendor = q.get("vendor") ?? "";
  const result = q.get("result");
  const error = q.get("error");
  const confirmation = q.get("confirmation");
  for (const k of ["vendor", "result", "error", "error_description", "confirmation"]) q.delete(k);
  const rest = q.toString();
  history.replaceState(history.state, "", location.pathname + (rest ? `?${rest}` : ""));
  const v = vendorName(vendor || "The integration");
  if (error) {
    const f = ERROR_TEXT[error];
    showMessage(f ? f(v) : `${v} was not changed: the authorization failed (${error}).`, "error");
  } else if (result === "pendingConfirmation" && confirmation) {
    pending = { vendor, id: confirmation };
    showMessage(`${v} was approved; nothing is changed until you confirm it below.`, "info");
  } else if (result && RESULT_TEXT[result]) {
    showMessage(RESULT_TEXT[result](v), "success");
  } else {
    showMessage(`${v}: ${result}.`, "info");
  }
}

// pending is a flow the callback parked (BROKER_OAUTH_FLOW_BINDING=confirm)
// until this admin confirms it: who approved it, at which instance, is shown
// first, since the approver may not be who the admin expected.
let pending = null;

async function showPending() {
  if (!pending || !token) return;
  const { vendor, id } = pending;
  pending = null;
  const name = vendorName(vendor);
  const path = `v1/account/integrations/${encodeURIComponent(vendor)}/oauth2/confirmations/${encodeURIComponent(id)}`;
  const panel = $("confirmation");
  let p;
  try {
    p = await api("GET", path);
  } catch (err) {
    showMessage(errorText(err, vendor), "error");
    return;
  }
  const by = p.approvedBy ?? {};
  const confirmBtn = el("button", { type: "button", class: "button primary", "data-action": "confirm-flow" }, `Confirm ${name}`);
  const rejectBtn = el("button", { type: "button", class: "button secondary", "data-action": "reject-flow" }, "Reject");
  panel.replaceChildren(
    el("h2", {}, `${name}: confirm the authorization`),
    el("p", {}, "Approved at the vendor by ",
      el("strong", { "data-field": "approver-name" }, String(by.name || by.id || "?")),
      by.email ? el("span", {}, " (", el("span", { "data-field": "approver-email" }, String(by.email)), ")") : null,
      " at ", el("strong", { "data-field": "approver-instance" }, String(p.instance?.url ?? "?")), "."),
    el("p", {}, "Confirm only if this is the vendor account you meant to connect; reject it otherwise (its tokens are revoked)."),
    el("div", { class: "actions" }, confirmBtn, rejectBtn),
  );
  const decide = async (method) => {
    setBusy(true);
    try {
      const res = await api(method, path);
      panel.hidden = true;
      panel.replaceChildren();
      if (method === "DELETE") showMessage(`${name} was not changed: the authorization was rejected.`, "success");
      else showMessage(RESULT_TEXT[res?.result] ? RESULT_TEXT[res.result](name) : `${name}: ${res?.result}.`, "success");
      await load();
    } catch (err) {
      showMessage(errorText(err, vendor), "error");
    } finally {
      setBusy(false);
    }
  };
  confirmBtn.addEventListener("click", () => decide("POST"));
  rejectBtn.addEventListener("click", () => decide("DELETE"));
  panel.hidden = false;
  confirmBtn.focus();
}

function init() {
  takeFragmentToken();
  takeCallbackResult();
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("token-input");
    const t = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!looksLikeJWT(t)) {
      showMessage("That does not look like a JWT (three base64url parts separated by dots).", "error");
      input.focus();
      return;
    }
    input.value = "";
    setToken(t);
    clearMessage();
    showSession();
    load();
    showPending();
  });
  $("forget-token").addEventListener("click", () => {
    setToken("");
    $("integrations").replaceChildren();
    clearAudit();
    clearMessage();
    showSession();
    $("token-input").focus();
  });
  $("reload").addEventListener("click", () => load());
  initAudit();
  showSession();
  load();
  showPending();
}

init();
