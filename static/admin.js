// passgate admin console: an admin signs in with a passkey (the session is the one /app.js keeps,
// so an admin signed in on / is signed in here too), finds users, sees their factors, roles,
// devices and sessions, resets their devices, unbinds one device, locks and unlocks accounts, and
// reads and exports the audit trail, and sees failure spikes and the alert webhook's deliveries,
// through the /v1/admin API.
// Plain ES module, no dependencies, no build step; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).
// Every server-provided text goes into the page as textContent, never as markup.

import {
  ApiError, accessTokenExpired, api, clearTokens, credentialToJSON, loadTokens, readJson, requestOptionsFromJSON,
  saveTokens, withAccessToken,
} from '/webauthn.js';
import { $, describeError as describeCommonError, disableButtons, markInvalid, oneAtATime, required, say, t } from '/page.js';
import { errorCode } from '/i18n.js';

const USERS_PAGE = 20;
// The audit trail is read newest first, at most AUDIT_MAX_PAGES of AUDIT_PAGE events, and
// shown AUDIT_SHOW at a time.
const AUDIT_PAGE = 1000;
const AUDIT_MAX_PAGES = 5;
const AUDIT_SHOW = 50;

// ---------------------------------------------------------------- messages


const describeError = (err) => describeCommonError(err, ['Error', 'TypeError']);

// "1 passkey", "2 passkeys": the key's _one or _other message with {n}.
const plural = (n, key) => t(`${key}_${n === 1 ? 'one' : 'other'}`, { n });

// An RFC 3339 string or Unix milliseconds as "YYYY-MM-DD HH:MM:SS" (UTC), or — when absent.
function when(value) {
  if (value === null || value === undefined || value === '') return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().slice(0, 19).replace('T', ' ');
}

const listText = (items) => (Array.isArray(items) && items.length ? items.join(', ') : '—');

// A new element with text content (never markup) and optional class and data attributes.
function el(tag, text = '', { className, data, title } = {}) {
  const node = document.createElement(tag);
  if (text !== '') node.textContent = text;
  if (className) node.className = className;
  if (title) node.title = title;
  for (const [key, value] of Object.entries(data || {})) node.dataset[key] = value ?? '';
  return node;
}

// ---------------------------------------------------------------- API

// A download: a plain <a href> cannot send the bearer token, so the page fetches the file and
// offers the blob. Returns { blob, filename }.
async function download(path, token) {
  const res = await fetch(path, {
    headers: { Accept: 'text/csv, application/problem+json', Authorization: `Bearer ${token}` },
    credentials: 'same-origin',
  });
  if (!res.ok) throw ApiError.fromResponse(res, await readJson(res));
  const disposition = res.headers.get('Content-Disposition') || '';
  const filename = /filename="?([^";]+)"?/i.exec(disposition)?.[1] || 'passgate-audit.csv';
  return { blob: await res.blob(), filename };
}


// What an API call gives once neither the access token nor its refresh token works (a refused
// refresh is invalid_credentials).
const sessionEnded = (err) => err instanceof ApiError && err.status === 401
  && ['unauthorized', 'invalid_credentials'].includes(err.problem.code);

const authed = (method, path, body) => withAccessToken((token) => api(path, { method, body, token }), accessTokenExpired);

const userPath = (userId, rest = '') => `/v1/admin/users/${encodeURIComponent(userId)}${rest}`;

// ---------------------------------------------------------------- busy

// One request at a time, and every failure shown in the status line. A failure that means the
// session ended meanwhile (its refresh token too) also leads back to the sign-in card.
const run = oneAtATime((err) => {
  if (sessionEnded(err) && document.body.dataset.view === 'console') {
    clearTokens();
    showSignIn(t('admin.session_ended'));
  }
  return describeError(err);
}, (on) => {
  disableButtons(on);
  if (!on && !window.PublicKeyCredential) $('admin-login').disabled = true;
});

// ---------------------------------------------------------------- names

// Usernames of the user ids this page has seen, so audit rows can show names; the API's rows
// carry ids only.
const names = new Map();

function remember(user) {
  if (user?.user_id && user.username) names.set(user.user_id, user.username);
}

// ---------------------------------------------------------------- views

// Mirrored on <body data-view="loading|signin|console"> so tests (and styles) can follow it.
function showView(view) {
  document.body.dataset.view = view;
  $('admin-signin').hidden = view !== 'signin';
  $('admin-console').hidden = view !== 'console';
}

function showSignIn(state) {
  $('admin-signin-state').textContent = state;
  showView('signin');
  $('admin-signin-title').focus();
}

// ---------------------------------------------------------------- signing in

let me = null;

// The bearer is an admin when listing users works. A 403 may come from a token issued before
// the role was granted (roles are read when a token is made): the refresh token is traded once
// for a token that carries the account's current roles.
async function probeAdmin() {
  const probe = () => authed('GET', `/v1/admin/users?limit=1`);
  try {
    await probe();
    return null;
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 403)) throw err;
    const tokens = loadTokens();
    if (!tokens?.refresh_token) return err;
    const fresh = await api('/v1/token/refresh', { body: { refresh_token: tokens.refresh_token } });
    saveTokens({ ...tokens, ...fresh });
    try {
      await probe();
      return null;
    } catch (again) {
      if (again instanceof ApiError && again.status === 403) return again;
      throw again;
    }
  }
}

// With a session in sessionStorage: the console for an admin, else the sign-in card saying why.
async function enter() {
  me = await authed('GET', '/v1/me');
  remember(me);
  const refused = await probeAdmin();
  if (refused) {
    const text = t('admin.not_admin', { username: me.username, error: describeError(refused) });
    showSignIn(text);
    say(text, 'error', errorCode(refused));
    return;
  }
  $('admin-username').textContent = me.username ?? '';
  showView('console');
  $('admin-who-title').focus();
  await searchUsers(false);
  await loadReviews(false);
}

async function signIn() {
  say(t('msg.waiting_passkey'));
  const start = await api('/v1/login/start', { body: {} });
  const credential = await navigator.credentials.get({ publicKey: requestOptionsFromJSON(start.publicKey) });
  const tokens = await api('/v1/login/finish', {
    body: { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) },
  });
  saveTokens(tokens);
  await enter();
  if (document.body.dataset.view === 'console') say(t('msg.signed_in'));
}

async function signOut() {
  const tokens = loadTokens();
  clearTokens();
  me = null;
  closeUser();
  clearAudit();
  $('user-results').replaceChildren();
  $('user-more').hidden = true;
  showSignIn(t('admin.signed_out_sign_in'));
  if (tokens?.refresh_token) {
    try {
      await api('/v1/logout', { body: { refresh_token: tokens.refresh_token } });
    } catch (err) {
      say(t('app.signed_out_here', { error: describeError(err) }), 'error', errorCode(err));
      return;
    }
  }
  say(t('app.signed_out'));
}

// ---------------------------------------------------------------- users

const search = { q: '', cursor: null };

function userItem(user) {
  remember(user);
  const button = el('button', '', { data: { userId: user.user_id } });
  button.type = 'button';
  button.append(el('strong', user.username));
  if (user.display_name && user.display_name !== user.username) button.append(el('span', user.display_name, { className: 'sub' }));
  if (user.email) button.append(el('span', user.email, { className: 'sub' }));
  for (const role of user.roles || []) button.append(el('span', role, { className: 'badge' }));
  if (user.locked) button.append(el('span', t('admin.badge_locked'), { className: 'badge locked' }));
  if (current?.user_id === user.user_id) button.setAttribute('aria-current', 'true');
  button.addEventListener('click', () => run(() => openUser(user.user_id)));
  const item = el('li', '', { data: { userId: user.user_id, username: user.username } });
  item.append(button);
  return item;
}

async function searchUsers(more) {
  if (!more) {
    search.q = $('user-q').value.trim();
    search.cursor = null;
  }
  const params = new URLSearchParams({ q: search.q, limit: String(USERS_PAGE) });
  if (more && search.cursor) params.set('cursor', search.cursor);
  const page = await authed('GET', `/v1/admin/users?${params}`);
  const items = (page.users || []).map(userItem);
  if (more) $('user-results').append(...items);
  else $('user-results').replaceChildren(...items);
  search.cursor = page.next_cursor || null;
  $('user-more').hidden = !search.cursor;
  $('user-results-empty').hidden = $('user-results').children.length > 0;
}

// ---------------------------------------------------------------- one user

// The detail of the user on screen (GET /v1/admin/users/{id}).
let current = null;

function markCurrentInResults() {
  for (const button of $('user-results').querySelectorAll('button[data-user-id]')) {
    if (button.dataset.userId === current?.user_id) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
}

// Opening a user (again) starts afresh: a reset's outcome, with its enrolment code, is not
// shown twice.
async function openUser(userId) {
  hideResetConfirm();
  hideResetOutcome();
  $('reset-reason').value = '';
  $('action-reason').value = '';
  await loadUser(userId);
  $('user-title').focus();
}

async function loadUser(userId) {
  current = await authed('GET', userPath(userId));
  remember(current);
  renderUser();
  markCurrentInResults();
  $('user-card').hidden = false;
}

function closeUser() {
  current = null;
  hideResetConfirm();
  hideResetOutcome();
  $('user-card').hidden = true;
}

function deviceRow(device) {
  const row = el('tr', '', { data: { deviceId: device.device_id } });
  const synced = t(device.backup_state ? 'admin.synced_yes' : device.backup_eligible ? 'admin.synced_can' : 'admin.synced_no');
  row.append(
    el('td', device.name || '—'),
    el('td', device.authenticator || device.aaguid || '—', { title: device.aaguid || '' }),
    el('td', when(device.created_at), { className: 'nowrap' }),
    el('td', when(device.last_used_at), { className: 'nowrap' }),
    el('td', synced),
    el('td', device.device_id, { className: 'mono' }),
  );
  const unbind = el('button', t('admin.unbind'), { data: { deviceId: device.device_id } });
  unbind.type = 'button';
  unbind.setAttribute('aria-label', t('admin.unbind_label', { name: device.name || device.device_id }));
  unbind.addEventListener('click', () => run(() => unbindDevice(device)));
  const cell = el('td');
  cell.append(unbind);
  row.append(cell);
  return row;
}

// A client's address, and its user agent on one line below (whole in the tooltip).
function clientCell(ip, userAgent) {
  const cell = el('td', ip || (userAgent ? '' : '—'));
  if (userAgent) cell.append(el('span', userAgent, { className: 'ua', title: userAgent }));
  return cell;
}

function sessionRow(session, devices) {
  const device = devices.find((d) => d.device_id === session.device_id);
  const methods = listText(session.amr) + (device ? ` (${device.name})` : '');
  const row = el('tr', '', { data: { sessionId: session.session_id } });
  row.append(
    el('td', when(session.created_at), { className: 'nowrap' }),
    el('td', when(session.last_used_at), { className: 'nowrap' }),
    el('td', when(session.expires_at), { className: 'nowrap' }),
    el('td', methods),
    clientCell(session.client_ip, session.user_agent),
    el('td', session.session_id, { className: 'mono' }),
  );
  return row;
}

function renderUser() {
  const user = current;
  $('user-title').textContent = user.display_name || user.username || '';
  $('user-username').textContent = user.username ?? '';
  $('user-display-name').textContent = user.display_name || '—';
  $('user-email').textContent = user.email ? t(user.email_verified ? 'msg.email_verified' : 'msg.email_unverified', { email: user.email }) : '—';
  $('user-id').textContent = user.user_id ?? '';
  $('user-factors').textContent = listText(user.factors);
  $('user-roles').textContent = listText(user.roles);
  $('user-locked').textContent = user.locked ? t('admin.locked_since', { time: when(user.locked_at) }) : t('admin.active');
  $('user-lock-badge').textContent = t(user.locked ? 'admin.badge_locked' : 'admin.badge_active');
  $('user-lock-badge').className = `badge${user.locked ? ' locked' : ''}`;
  $('user-card').dataset.locked = String(Boolean(user.locked));
  $('lock-toggle').textContent = t(user.locked ? 'admin.unlock' : 'admin.lock');

  const devices = user.devices || [];
  const sessions = user.sessions || [];
  $('user-devices').replaceChildren(...devices.map(deviceRow));
  $('devices-table').hidden = devices.length === 0;
  $('user-no-devices').hidden = devices.length > 0;
  $('user-sessions').replaceChildren(...sessions.map((s) => sessionRow(s, devices)));
  $('sessions-table').hidden = sessions.length === 0;
  $('user-no-sessions').hidden = sessions.length > 0;
}


const actionReason = () => $('action-reason').value.trim();

async function toggleLock() {
  if (!current) return;
  const lock = !current.locked;
  const reason = actionReason();
  const { username } = current;
  await authed('POST', userPath(current.user_id, lock ? '/lock' : '/unlock'), reason ? { reason } : {});
  $('action-reason').value = '';
  await loadUser(current.user_id);
  await refreshResultItem(current);
  say(t(lock ? 'admin.locked' : 'admin.unlocked', { username }));
}

// Keeps the search result's badges in step with the detail.
async function refreshResultItem(user) {
  const item = $('user-results').querySelector(`li[data-user-id="${CSS.escape(user.user_id)}"]`);
  if (item) item.replaceWith(userItem(user));
}

async function unbindDevice(device) {
  if (!current) return;
  const { username, user_id: userId } = current;
  const label = device.name || device.device_id;
  if (!window.confirm(t('admin.confirm_unbind', { label, username }))) return;
  const reason = actionReason();
  const query = reason ? `?${new URLSearchParams({ reason })}` : '';
  await authed('DELETE', `${userPath(userId, `/devices/${encodeURIComponent(device.device_id)}`)}${query}`);
  $('action-reason').value = '';
  await loadUser(userId);
  say(t('admin.unbound', { label, username }));
}

// ---------------------------------------------------------------- reset devices

function askReset() {
  if (!current) return;
  required('reset-reason', 'admin.need_reason');
  const devices = current.devices?.length ?? 0;
  const sessions = current.sessions?.length ?? 0;
  hideResetOutcome();
  $('reset-confirm-text').textContent = t('admin.confirm_reset', {
    username: current.username, passkeys: plural(devices, 'admin.passkeys'), sessions: plural(sessions, 'admin.sessions'),
  });
  $('reset-confirm').hidden = false;
  $('reset-devices').hidden = true;
  $('reset-confirm-no').focus();
}

function hideResetConfirm() {
  $('reset-confirm').hidden = true;
  $('reset-confirm-text').textContent = '';
  $('reset-devices').hidden = false;
}

async function resetDevices() {
  if (!current) return;
  const reason = required('reset-reason', 'admin.need_reason');
  const { user_id: userId, username } = current;
  const outcome = await authed('POST', userPath(userId, '/reset-devices'), { reason });
  hideResetConfirm();
  $('reset-reason').value = '';
  showResetOutcome(username, outcome);
  await loadUser(userId);
  $('reset-outcome-title').focus();
  say(t('admin.reset_done', { username }));
}

function showResetOutcome(username, outcome) {
  const devices = Number(outcome.revoked_devices) || 0;
  const sessions = Number(outcome.revoked_sessions) || 0;
  const box = $('reset-outcome');
  box.dataset.revokedDevices = String(devices);
  box.dataset.revokedSessions = String(sessions);
  $('reset-counts').textContent = t('admin.reset_counts', {
    devices: plural(devices, 'admin.devices'), username, sessions: plural(sessions, 'admin.sessions'),
  });
  // Shown once: the server keeps only a hash of it.
  $('enrolment-code').textContent = outcome.enrolment_code || '';
  $('enrolment-code-box').hidden = !outcome.enrolment_code;
  $('enrolment-sent-to').textContent = outcome.enrolment_code_sent_to || '';
  $('enrolment-sent').hidden = !outcome.enrolment_code_sent_to;
  box.hidden = false;
}

function hideResetOutcome() {
  const box = $('reset-outcome');
  box.hidden = true;
  delete box.dataset.revokedDevices;
  delete box.dataset.revokedSessions;
  // The code should not stay in the page once handed over.
  $('enrolment-code').textContent = '';
  $('enrolment-code-box').hidden = true;
  $('enrolment-sent-to').textContent = '';
  $('enrolment-sent').hidden = true;
  $('reset-counts').textContent = '';
}

// ---------------------------------------------------------------- audit trail

const audit = { rows: [], shown: 0 };
let exportUrl = null;

// A datetime-local value (local time) as Unix milliseconds, or null when empty.
function localTime(id, whatKey) {
  const value = $(id).value;
  if (!value) return null;
  const ms = new Date(value).getTime();
  if (Number.isNaN(ms)) {
    markInvalid($(id));
    $(id).focus();
    throw new Error(t('admin.not_a_date', { what: t(whatKey) }));
  }
  return ms;
}

function auditFilter() {
  const params = new URLSearchParams();
  const userId = $('audit-user').value.trim();
  const event = $('audit-event').value.trim();
  const since = localTime('audit-since', 'admin.since');
  const until = localTime('audit-until', 'admin.until');
  if (since !== null && until !== null && until <= since) {
    markInvalid($('audit-until'));
    $('audit-until').focus();
    throw new Error(t('admin.until_before_since'));
  }
  if (userId) params.set('user_id', userId);
  if (event) params.set('event', event);
  if (since !== null) params.set('since', String(since));
  if (until !== null) params.set('until', String(until));
  return params;
}

// A user id as the name this page knows for it (the id stays in the title and data).
function userCell(userId, field) {
  const name = userId ? names.get(userId) : null;
  const cell = el('td', userId ? (name ?? userId) : '—', { className: name ? '' : 'mono', title: userId || '' });
  cell.dataset.field = field;
  cell.dataset.userId = userId ?? '';
  return cell;
}

function auditRow(event) {
  const row = el('tr', '', { data: { eventId: event.event_id, event: event.event, outcome: event.outcome } });
  const user = userCell(event.user_id, 'user');
  const actor = userCell(event.actor_id, 'actor');
  const reason = el('td', event.reason || '—');
  reason.dataset.field = 'reason';
  row.append(
    el('td', when(event.occurred_at), { className: 'nowrap' }),
    el('td', event.event, { data: { field: 'event' } }),
    el('td', event.outcome, { data: { field: 'outcome' } }),
    user,
    actor,
    el('td', event.device_id || '—', { className: 'mono' }),
    reason,
    clientCell(event.client_ip, event.user_agent),
    el('td', event.request_id || '—', { className: 'mono' }),
  );
  return row;
}

function showMoreAudit() {
  const next = audit.rows.slice(audit.shown, audit.shown + AUDIT_SHOW);
  $('audit-events').append(...next.map(auditRow));
  audit.shown += next.length;
  $('audit-more').hidden = audit.shown >= audit.rows.length;
}

async function loadAudit() {
  const filter = auditFilter();
  const rows = [];
  let cursor = null;
  let pages = 0;
  do {
    const params = new URLSearchParams(filter);
    params.set('format', 'json');
    params.set('order', 'newest');
    params.set('limit', String(AUDIT_PAGE));
    if (cursor) params.set('cursor', cursor);
    const page = await authed('GET', `/v1/admin/audit?${params}`);
    rows.push(...(page.events || []));
    cursor = page.next_cursor || null;
    pages += 1;
  } while (cursor && pages < AUDIT_MAX_PAGES);
  audit.rows = rows;
  audit.shown = 0;
  $('audit-events').replaceChildren();
  $('audit-table').hidden = rows.length === 0;
  showMoreAudit();
  $('audit-note').textContent = cursor
    ? t('admin.audit_capped', { n: AUDIT_PAGE * AUDIT_MAX_PAGES })
    : rows.length ? t('admin.audit_count', { events: plural(rows.length, 'admin.events') }) : t('admin.audit_none');
  $('audit-card').dataset.loaded = 'true';
}

function clearExport() {
  if (exportUrl) URL.revokeObjectURL(exportUrl);
  exportUrl = null;
  const link = $('audit-download');
  link.hidden = true;
  link.removeAttribute('href');
}

function clearAudit() {
  audit.rows = [];
  audit.shown = 0;
  $('audit-events').replaceChildren();
  $('audit-table').hidden = true;
  $('audit-more').hidden = true;
  $('audit-note').textContent = '';
  delete $('audit-card').dataset.loaded;
  clearExport();
}

async function exportAudit() {
  const params = auditFilter();
  params.set('format', 'csv');
  const { blob, filename } = await withAccessToken(
    (token) => download(`/v1/admin/audit?${params}`, token),
    accessTokenExpired,
  );
  clearExport();
  exportUrl = URL.createObjectURL(blob);
  const link = $('audit-download');
  link.href = exportUrl;
  link.download = filename;
  link.textContent = t('admin.save_export', { filename, kb: Math.max(1, Math.round(blob.size / 1024)) });
  link.hidden = false;
  link.focus();
  say(t('admin.export_ready'));
}

async function showUserAudit() {
  if (!current) return;
  $('audit-user').value = current.user_id;
  $('audit-event').value = '';
  $('audit-since').value = '';
  $('audit-until').value = '';
  clearExport();
  await loadAudit();
  $('audit-title').focus();
}

// ---------------------------------------------------------------- failure spikes

const DIMENSION_KEYS = [
  ['networks', 'admin.anomalies_networks'],
  ['accounts', 'admin.anomalies_accounts'],
  ['devices', 'admin.anomalies_devices'],
  ['kinds', 'admin.anomalies_kinds'],
];

// "HH:MM n" for each minute with failures, oldest first.
const perMinute = (series) => series.map((m) => `${when(m.minute).slice(11, 16)} ${m.count}`).join(', ');

function anomalyRow(dimensionKey, entry) {
  const row = document.createElement('tr');
  const peak = entry.series.reduce((most, m) => Math.max(most, m.count), 0);
  // An account is shown by name when this page has seen it.
  const key = dimensionKey === 'admin.anomalies_accounts' && names.has(entry.key)
    ? `${names.get(entry.key)} (${entry.key})` : entry.key;
  row.append(el('td', t(dimensionKey)), el('td', key, { className: 'mono' }), el('td', String(entry.total)),
    el('td', String(peak)), el('td', perMinute(entry.series), { className: 'mono' }));
  return row;
}

function deliveryRow(delivery) {
  const row = document.createElement('tr');
  const result = delivery.status_code !== null && delivery.status_code !== undefined
    ? `HTTP ${delivery.status_code}` : t('admin.deliveries_no_answer', { error: delivery.error ?? '' });
  row.append(el('td', when(delivery.at)),
    el('td', `${delivery.dimension} ${delivery.key}: ${delivery.count}`, { className: 'mono', title: delivery.alert_id }),
    el('td', String(delivery.attempt)), el('td', result));
  return row;
}

async function loadAnomalies() {
  const minutes = $('anomalies-minutes').value;
  const view = await authed('GET', `/v1/admin/anomalies?minutes=${encodeURIComponent(minutes)}`);
  const log = await authed('GET', '/v1/admin/anomalies/deliveries?limit=50');
  const rows = [];
  for (const [field, key] of DIMENSION_KEYS) {
    for (const entry of view[field] || []) rows.push(anomalyRow(key, entry));
  }
  $('anomalies-rows').replaceChildren(...rows);
  $('anomalies-empty').hidden = rows.length > 0;
  const deliveries = (log.deliveries || []).map(deliveryRow);
  $('deliveries-rows').replaceChildren(...deliveries);
  $('deliveries-empty').hidden = deliveries.length > 0;
  $('anomalies-tables').hidden = false;
  say(t('admin.anomalies_loaded', { n: rows.length }));
}

// ---------------------------------------------------------------- review queue

// Held sign-ins and payments (GET /v1/admin/reviews, oldest first), each with its reasons,
// context and appeal, and for a held one a reason field with Approve and Deny.
const reviews = { cursor: null };

function reviewItem(review) {
  const item = el('li', '', { className: 'review', data: { reviewId: review.review_id, status: review.expired ? 'expired' : review.status } });
  const what = t(review.kind === 'payment' ? 'review.kind_payment' : 'review.kind_signin');
  item.append(el('h3', t('admin.review_heading', { what, username: review.username })));
  const state = t(`review.status_${review.expired ? 'expired' : review.status}`);
  item.append(el('p', t('admin.review_meta', { score: review.score, when: when(review.created_at), status: state }), { className: 'hint' }));
  item.append(el('h4', t('admin.review_reasons')));
  const reasons = el('ul', '', { className: 'review-reasons' });
  for (const reason of review.reasons || []) reasons.append(el('li', `${reason.words} (${reason.rule}, +${reason.score})`));
  item.append(reasons);
  const context = Object.entries(review.context || {});
  if (context.length) {
    item.append(el('h4', t('admin.review_context')));
    const list = el('dl', '', { className: 'profile' });
    for (const [key, value] of context) list.append(el('dt', key), el('dd', typeof value === 'string' ? value : JSON.stringify(value)));
    item.append(list);
  }
  if (review.appeal) {
    item.append(el('h4', t('admin.review_appeal', { when: when(review.appealed_at) })));
    item.append(el('blockquote', review.appeal, { className: 'review-appeal' }));
  } else {
    item.append(el('p', t('admin.review_no_appeal'), { className: 'hint' }));
  }
  if (review.decision_reason) {
    item.append(el('p', t('admin.review_decided', { when: when(review.decided_at), reason: review.decision_reason }), { className: 'review-decision' }));
  }
  if (review.status === 'held' && !review.expired) item.append(decisionForm(review));
  return item;
}

function decisionForm(review) {
  const form = el('div', '', { className: 'action' });
  if (review.user_id === me?.user_id) {
    form.append(el('p', t('admin.review_own'), { className: 'hint' }));
    return form;
  }
  const id = `review-reason-${review.review_id}`;
  const field = el('div', '', { className: 'field' });
  const label = el('label', t('admin.review_reason_label'));
  label.htmlFor = id;
  const input = el('input', '', { className: 'review-reason' });
  Object.assign(input, { id, type: 'text', autocomplete: 'off', maxLength: 500, required: true });
  field.append(label, input);
  const buttons = el('div', '', { className: 'actions' });
  for (const verdict of ['approve', 'deny']) {
    const button = el('button', t(`admin.review_${verdict}`), { className: verdict === 'approve' ? 'primary' : '', data: { verdict } });
    button.type = 'button';
    button.addEventListener('click', () => run(() => decideReview(review, verdict, input)));
    buttons.append(button);
  }
  form.append(field, buttons);
  return form;
}

async function loadReviews(more) {
  if (!more) reviews.cursor = null;
  const params = new URLSearchParams({ status: $('reviews-status').value, limit: '20' });
  if (more && reviews.cursor) params.set('cursor', reviews.cursor);
  const page = await authed('GET', `/v1/admin/reviews?${params}`);
  for (const review of page.reviews) names.set(review.user_id, review.username);
  const items = page.reviews.map(reviewItem);
  if (more) $('review-list').append(...items);
  else $('review-list').replaceChildren(...items);
  reviews.cursor = page.next_cursor || null;
  $('reviews-more').hidden = !reviews.cursor;
  $('reviews-empty').hidden = $('review-list').children.length > 0;
}

async function decideReview(review, verdict, input) {
  const reason = input.value.trim();
  if (!reason) {
    markInvalid(input);
    input.focus();
    throw new Error(t('admin.review_need_reason'));
  }
  const path = `/v1/admin/reviews/${encodeURIComponent(review.review_id)}/${verdict}`;
  const decided = await authed('POST', path, { reason });
  await loadReviews(false);
  say(t(verdict === 'approve' ? 'admin.review_approved' : 'admin.review_denied', { username: decided.username }), 'ok');
  $('reviews-title').focus();
}

// ---------------------------------------------------------------- wiring

function onSubmit(formId, action) {
  $(formId).addEventListener('submit', (event) => {
    event.preventDefault();
    run(action);
  });
}

function init() {
  run.setBusy(false);
  $('admin-login').addEventListener('click', () => run(signIn));
  $('admin-logout').addEventListener('click', () => run(signOut));
  onSubmit('user-search-form', () => searchUsers(false));
  $('user-more').addEventListener('click', () => run(() => searchUsers(true)));
  $('lock-toggle').addEventListener('click', () => run(toggleLock));
  $('user-audit').addEventListener('click', () => run(showUserAudit));
  onSubmit('reset-form', async () => askReset());
  $('reset-confirm-yes').addEventListener('click', () => run(resetDevices));
  $('reset-confirm-no').addEventListener('click', () => { hideResetConfirm(); say(''); $('reset-reason').focus(); });
  $('reset-outcome-done').addEventListener('click', () => { hideResetOutcome(); say(''); });
  onSubmit('audit-form', loadAudit);
  $('audit-export').addEventListener('click', () => run(exportAudit));
  $('audit-more').addEventListener('click', showMoreAudit);
  onSubmit('reviews-form', () => loadReviews(false));
  $('reviews-status').addEventListener('change', () => run(() => loadReviews(false)));
  $('reviews-more').addEventListener('click', () => run(() => loadReviews(true)));
  // An export is of the filter it was made with: a changed filter withdraws it.
  $('audit-form').addEventListener('input', clearExport);
  onSubmit('anomalies-form', loadAnomalies);

  if (!window.PublicKeyCredential) say(t('msg.no_webauthn'), 'error');
  if (!loadTokens()?.access_token) {
    showSignIn(t('admin.admin_signin_state'));
    return;
  }
  run(async () => {
    try {
      await enter();
    } catch (err) {
      if (sessionEnded(err)) {
        clearTokens();
        showSignIn(t('admin.session_ended_passkey'));
      } else {
        showSignIn(t('admin.load_failed'));
      }
      throw err;
    }
  });
}

init();
