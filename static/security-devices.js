// passgate sign-in options page, its passkeys and sessions cards: lists, renames, adds and
// removes the signed-in user's passkeys (/v1/me/devices), lists and ends their sessions
// (/v1/me/sessions), and tells the browser or password manager which passkeys the server still
// accepts (the WebAuthn Signal API, where the browser has it). /security.js owns the page and
// calls initDevices. Plain ES module, no dependencies, no build step.

import {
  ApiError, clearTokens, creationOptionsFromJSON, credentialToJSON, decodeJwtPayload, loadTokens,
} from '/webauthn.js';
import { $, describeError as describeCommonError, say, t } from '/page.js';
import { errorCode, lang } from '/i18n.js';

// Small marks for the passkey providers people meet most, keyed by AAGUID. Letters, not the
// providers' logos (which are theirs to license); any other model gets the generic key icon.
// An AAGUID is what the authenticator claims, unverified: the mark is a display nicety only.
const MARKS = {
  'ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4': ['G', 'google'],
  'fbfc3007-154e-4ecc-8c0b-6e020557d7bd': ['A', 'apple'],
  'dd4ec289-e01d-41c9-bb89-70fa845d4bf2': ['A', 'apple'],
  '08987058-cadc-4b81-b6e1-30de50dcbe96': ['W', 'windows'],
  '9ddd1817-af5a-4672-a2b9-3e3dd95000a9': ['W', 'windows'],
  '6028b017-b1d4-4c02-b4b3-afcdafc96bb2': ['W', 'windows'],
  'bada5566-a7aa-401f-bd96-45619a55120d': ['1', 'onepassword'],
  'd548826e-79b4-db40-a3d8-11116f7e8349': ['B', 'bitwarden'],
  '531126d6-e717-415c-9320-3d9aa6981239': ['D', 'dashlane'],
  '53414d53-554e-4700-0000-000000000000': ['S', 'samsung'],
  '01020304-0506-0708-0102-030405060708': ['C', 'chromium'],
};

let ctx = null;
let devices = [];
let sessions = [];
// The device whose inline rename form, or removal confirmation, is open (one at a time).
let editing = null;
let confirming = null;

// ---------------------------------------------------------------- small helpers

// Added after a password sign-in and not yet trusted with payments (nor with changing passkeys).
const waiting = (device) => Boolean(device.payments_from) && new Date(device.payments_from) > new Date();

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const dateText = (iso) => new Date(iso).toLocaleString(lang, { dateStyle: 'medium', timeStyle: 'short' });

const when = (iso) => el('time', { dateTime: iso, textContent: dateText(iso) });

// The message key's text with a <time> for iso where its {time} placeholder is (word order
// differs between languages, so the sentence, not the page, places the date).
function timed(key, iso, params = {}) {
  const [before, after = ''] = t(key, { ...params, time: '\u0000' }).split('\u0000');
  return [before, when(iso), after].filter((part) => part !== '');
}

// The card's alert, with the server's problem code (if any) as data-code, as on the status line.
const showAlert = (id, text, code = '') => {
  $(id).textContent = text;
  $(id).dataset.code = code;
};

function describeError(err) {
  if (err?.name === 'InvalidStateError') {
    return t('devices.already_held');
  }
  if (err instanceof ApiError && err.problem.code === 'passkey_required') {
    // The shared wording says to sign in with the passkey; here that is not enough while every
    // passkey is still waiting (a sign-in with one does not count as a passkey sign-in then).
    const { detail, request_id: requestId } = err.problem;
    let next = t('devices.next_sign_in');
    if (devices.length && devices.every(waiting)) next = t(devices.length === 1 ? 'devices.next_waiting_one' : 'devices.next_waiting_many');
    const parts = [t('devices.passkey_required', { detail: detail || '' }), next];
    if (requestId) parts.push(t('error.request_id', { id: requestId }));
    return parts.join(' ');
  }
  // A wait the server asks for is in the common description.
  return describeCommonError(err, ['Error', 'TypeError']);
}

// The field is invalid, described by the card's alert (kept until the field is edited).
function markInvalid(field, alertId) {
  field.setAttribute('aria-invalid', 'true');
  const ids = (field.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
  if (!ids.includes(alertId)) field.setAttribute('aria-describedby', [...ids, alertId].join(' '));
}

function clearInvalid(field, alertId) {
  field.removeAttribute('aria-invalid');
  const ids = (field.getAttribute('aria-describedby') || '').split(' ').filter((id) => id && id !== alertId);
  if (ids.length) field.setAttribute('aria-describedby', ids.join(' '));
  else field.removeAttribute('aria-describedby');
}

// Runs action through the page's one-at-a-time runner; its failure goes to the card's alert.
function act(alertId, action, field = null) {
  return ctx.run(async () => {
    showAlert(alertId, '');
    try {
      await action();
    } catch (err) {
      if (field && (err instanceof ApiError ? err.status === 422 : err.invalidField)) markInvalid(field, alertId);
      showAlert(alertId, describeError(err), errorCode(err));
    }
  });
}

// The current session's access token claims (read, not verified: for wording only).
function sessionClaims() {
  try {
    return decodeJwtPayload(loadTokens()?.access_token, t('app.access_token'));
  } catch {
    return {};
  }
}

// How the current session began.
const sessionMethods = () => sessionClaims().amr || [];

// Removing the passkey a session began with ends that session (src/service/devices.rs).
const signedInWithIt = (device) => sessionClaims().device_id === device.device_id;

// ---------------------------------------------------------------- WebAuthn Signal API

// Tells the browser (and the password manager behind it) what the server knows, where the
// browser has the method. It is advice to the browser: a failure or a missing method changes
// nothing here and is never shown as an error. The outcome is mirrored on
// <body data-signal-…> for tests.
function signal(method, options) {
  const fn = window.PublicKeyCredential?.[method];
  const mark = (outcome) => { document.body.dataset[method] = outcome; };
  if (typeof fn !== 'function') {
    mark('unsupported');
    return;
  }
  try {
    Promise.resolve(fn.call(PublicKeyCredential, options)).then(() => mark('sent'), () => mark('failed'));
  } catch {
    mark('failed');
  }
}

// After a list: the passkeys the server accepts for this user; a provider may hide the others.
// With no passkey left the page knows no RP id or user handle to name, so it says nothing.
function signalAccepted() {
  if (!devices.length) return;
  const { rp_id: rpId, user_handle: userId } = devices[0];
  signal('signalAllAcceptedCredentials', { rpId, userId, allAcceptedCredentialIds: devices.map((d) => d.credential_id) });
}

// ---------------------------------------------------------------- passkeys

function icon(device) {
  const mark = MARKS[String(device.aaguid).toLowerCase()];
  if (!mark) return el('img', { className: 'device-icon', src: '/icons/passkey.svg', alt: '', width: 36, height: 36 });
  const badge = el('span', { className: `device-icon mark-${mark[1]}`, textContent: mark[0] });
  badge.setAttribute('aria-hidden', 'true');
  return badge;
}

function kindOf(device) {
  if (device.backup_state) return t('devices.kind_synced');
  if (device.backup_eligible) return t('devices.kind_syncable');
  return t('devices.kind_bound');
}

function renameForm(device) {
  const input = el('input', { id: 'rename-input', type: 'text', value: device.name, maxLength: 64, autocomplete: 'off', required: true });
  const form = el('form', { className: 'rename', noValidate: true },
    el('label', { htmlFor: 'rename-input', textContent: t('devices.new_name_for', { name: device.name }) }),
    input,
    el('div', { className: 'actions' },
      el('button', { type: 'submit', className: 'primary', textContent: t('devices.save_name') }),
      el('button', { type: 'button', className: 'rename-cancel', textContent: t('devices.cancel') })));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    act('passkeys-error', () => rename(device, input), input);
  });
  form.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      closeEditors(device);
    }
  });
  form.querySelector('.rename-cancel').addEventListener('click', () => closeEditors(device));
  input.addEventListener('input', () => {
    clearInvalid(input, 'passkeys-error');
    showAlert('passkeys-error', '');
  });
  return form;
}

function confirmBox(device) {
  const lastOne = devices.length === 1;
  const box = el('div', { className: 'confirm' },
    el('p', { textContent: [t('devices.confirm_remove', { name: device.name }),
      lastOne ? t('devices.confirm_last') : '',
      signedInWithIt(device) ? t('devices.confirm_this_session') : ''].filter(Boolean).join(' ') }),
    el('div', { className: 'actions' },
      el('button', { type: 'button', className: 'danger remove-confirm', textContent: t('devices.remove_passkey') }),
      el('button', { type: 'button', className: 'remove-cancel', textContent: t('devices.keep_it') })));
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', t('devices.confirm_label', { name: device.name }));
  box.querySelector('.remove-confirm').addEventListener('click', () => act('passkeys-error', () => remove(device)));
  box.querySelector('.remove-cancel').addEventListener('click', () => closeEditors(device));
  box.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') closeEditors(device);
  });
  return box;
}

function deviceItem(device) {
  const item = el('li', { className: 'device' });
  item.dataset.deviceId = device.device_id;
  const used = device.last_used_at ? timed('devices.last_used', device.last_used_at) : [t('devices.never_used')];
  const body = el('div', { className: 'device-body' },
    editing === device.device_id ? renameForm(device) : el('p', { className: 'device-name' }, el('strong', { textContent: device.name })),
    el('p', { className: 'device-meta device-model', textContent: `${device.authenticator || t('devices.unknown_model')} · ${kindOf(device)}` }),
    el('p', { className: 'device-meta' }, ...timed('devices.added', device.created_at), ' · ', ...used));
  if (waiting(device)) {
    body.append(el('p', { className: 'device-meta device-wait' },
      ...timed('devices.waiting', device.payments_from)));
  }
  if (confirming === device.device_id) body.append(confirmBox(device));
  if (editing !== device.device_id && confirming !== device.device_id) {
    const renameButton = el('button', { type: 'button', className: 'rename-open', textContent: t('devices.rename') });
    renameButton.setAttribute('aria-label', t('devices.rename_label', { name: device.name }));
    renameButton.addEventListener('click', () => openEditor(device, 'rename'));
    const removeButton = el('button', { type: 'button', className: 'remove-open', textContent: t('devices.remove') });
    removeButton.setAttribute('aria-label', t('devices.remove_label', { name: device.name }));
    removeButton.addEventListener('click', () => openEditor(device, 'remove'));
    body.append(el('div', { className: 'device-actions' }, renameButton, removeButton));
  }
  item.append(icon(device), body);
  return item;
}

const itemOf = (deviceId) => $('passkeys-list').querySelector(`li[data-device-id="${CSS.escape(deviceId)}"]`);

function renderDevices() {
  const list = $('passkeys-list');
  list.replaceChildren(...devices.map(deviceItem));
  if (!devices.length) list.append(el('li', { className: 'empty', textContent: t('devices.none') }));
  renderNote();
}

function openEditor(device, what) {
  editing = what === 'rename' ? device.device_id : null;
  confirming = what === 'remove' ? device.device_id : null;
  showAlert('passkeys-error', '');
  renderDevices();
  const item = itemOf(device.device_id);
  if (what === 'rename') {
    const input = item.querySelector('input');
    input.focus();
    input.select();
  } else {
    item.querySelector('.remove-cancel').focus();
  }
}

function closeEditors(device) {
  editing = null;
  confirming = null;
  renderDevices();
  itemOf(device.device_id)?.querySelector('.rename-open')?.focus();
}

// What the server allows this session to change, said before the user tries (see
// src/service/fresh.rs: only a recent passkey sign-in changes what guards an account with a
// passkey; an account without one may add its first from any recent sign-in).
function renderNote() {
  const amr = sessionMethods();
  let text = '';
  if (amr.includes('enrol')) {
    text = t('devices.note_enrol');
  } else if (amr.includes('new')) {
    text = t('devices.note_new');
  } else if (!amr.includes('hwk') && devices.length && devices.every(waiting)) {
    text = t(devices.length === 1 ? 'devices.note_pwd_waiting_one' : 'devices.note_pwd_waiting_many');
  } else if (!amr.includes('hwk') && devices.length) {
    text = t('devices.note_pwd');
  } else if (!amr.includes('hwk')) {
    text = t('devices.note_pwd_none');
  }
  $('passkeys-note').textContent = text;
  $('passkeys-note').hidden = !text;
}

async function loadDevices() {
  devices = await ctx.authed('GET', '/v1/me/devices');
  renderDevices();
  // The sessions name the passkey they began with.
  renderSessions();
  signalAccepted();
}

async function rename(device, input) {
  const name = input.value.trim();
  if (!name) {
    input.focus();
    throw Object.assign(new Error(t('devices.need_name')), { invalidField: true });
  }
  await ctx.authed('PATCH', `/v1/me/devices/${encodeURIComponent(device.device_id)}`, { name });
  editing = null;
  await loadDevices();
  itemOf(device.device_id)?.querySelector('.rename-open')?.focus();
  say(t('devices.renamed', { name }));
}

async function remove(device) {
  try {
    await ctx.authed('DELETE', `/v1/me/devices/${encodeURIComponent(device.device_id)}`);
  } catch (err) {
    confirming = null;
    renderDevices();
    itemOf(device.device_id)?.querySelector('.remove-open')?.focus();
    if (err instanceof ApiError && err.problem.code === 'forbidden') {
      err.problem = { ...err.problem, detail: t('devices.not_removed', { name: device.name, detail: err.problem.detail || t('devices.refused') }) };
    }
    throw err;
  }
  confirming = null;
  signal('signalUnknownCredential', { rpId: device.rp_id, credentialId: device.credential_id });
  if (signedInWithIt(device)) {
    // The server ended this session with the passkey: its tokens no longer work.
    clearTokens();
    ctx.showSignedOut(t('devices.removed_signed_out', { name: device.name }), 'info');
    return;
  }
  await Promise.all([loadDevices(), ctx.reloadProfile(), loadSessions()]);
  $('passkeys-title').focus();
  say(t('devices.removed', { name: device.name }));
}

async function addPasskey() {
  const name = $('passkey-name').value.trim();
  say(t('devices.waiting_new'));
  const start = await ctx.authed('POST', '/v1/me/devices/start', {});
  const credential = await navigator.credentials.create({ publicKey: creationOptionsFromJSON(start.publicKey) });
  const body = { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) };
  if (name) body.device_name = name;
  const added = await ctx.authed('POST', '/v1/me/devices/finish', body);
  $('passkey-name').value = '';
  await Promise.all([loadDevices(), ctx.reloadProfile()]);
  itemOf(added.device_id)?.querySelector('.rename-open')?.focus();
  say(added.payments_from
    ? t('devices.added_waiting', { name: added.name, time: dateText(added.payments_from) })
    : t('devices.added_done', { name: added.name }));
}

// ---------------------------------------------------------------- sessions

// A short name for a user agent: enough to tell sessions apart. The full string is in the title.
function describeAgent(ua) {
  if (!ua) return t('sessions.unknown_agent');
  const browser = [[/Edg\//, 'Edge'], [/OPR\//, 'Opera'], [/Firefox\//, 'Firefox'], [/(Headless)?Chrome\//, 'Chrome'],
    [/Version\/[\d.]+.*Safari\//, 'Safari']].find(([re]) => re.test(ua));
  const system = [[/Android/, 'Android'], [/iPhone|iPad/, 'iOS'], [/Windows/, 'Windows'], [/Mac OS X|Macintosh/, 'macOS'],
    [/CrOS/, 'ChromeOS'], [/Linux/, 'Linux']].find(([re]) => re.test(ua));
  if (!browser) return ua.split(/[\s/]/)[0] || t('sessions.unknown_agent');
  return system ? t('sessions.agent_on', { browser: browser[1], system: system[1] }) : browser[1];
}

function signedInWith(session) {
  const amr = session.amr || [];
  if (amr.includes('enrol')) return t('sessions.by_enrol');
  if (amr.includes('hwk')) {
    const device = devices.find((d) => d.device_id === session.device_id);
    const which = device ? t('sessions.by_passkey_named', { name: device.name }) : t('sessions.by_passkey');
    return amr.includes('new') ? t('sessions.by_waiting', { which }) : which;
  }
  if (amr.includes('pwd')) return t('sessions.by_password');
  return amr.join(', ') || t('sessions.by_unknown');
}

function sessionItem(session) {
  const agent = describeAgent(session.user_agent);
  const title = el('p', { className: 'session-agent' }, el('strong', { textContent: agent }));
  if (session.user_agent) title.title = session.user_agent;
  if (session.current) title.append(' ', el('span', { className: 'badge', textContent: t('sessions.this_browser') }));
  const end = el('button', { type: 'button', className: 'session-end', textContent: t(session.current ? 'sessions.sign_out_here' : 'sessions.end') });
  end.setAttribute('aria-label', session.current ? t('sessions.sign_out_here_label') : t('sessions.end_label', { agent, time: dateText(session.created_at) }));
  end.addEventListener('click', () => act('sessions-error', () => endSession(session)));
  const item = el('li', { className: 'session' },
    el('div', { className: 'session-body' },
      title,
      el('p', { className: 'device-meta', textContent: session.client_ip ? t('sessions.signed_in_with_from', { how: signedInWith(session), ip: session.client_ip }) : t('sessions.signed_in_with', { how: signedInWith(session) }) }),
      el('p', { className: 'device-meta' }, ...timed('sessions.started', session.created_at), ' · ', ...timed('sessions.last_active', session.last_used_at)),
      el('div', { className: 'device-actions' }, end)));
  item.dataset.sessionId = session.session_id;
  if (session.current) item.dataset.current = 'true';
  return item;
}

function renderSessions() {
  // This browser's session first, then the most recently active.
  const sorted = [...sessions].sort((a, b) => (b.current - a.current) || b.last_used_at.localeCompare(a.last_used_at));
  $('sessions-list').replaceChildren(...sorted.map(sessionItem));
  $('sessions-end-others').hidden = !sessions.some((s) => !s.current);
}

async function loadSessions() {
  sessions = await ctx.authed('GET', '/v1/me/sessions');
  renderSessions();
}

async function endSession(session) {
  await ctx.authed('DELETE', `/v1/me/sessions/${encodeURIComponent(session.session_id)}`);
  if (session.current) {
    // Its tokens no longer work: this tab is signed out.
    clearTokens();
    ctx.showSignedOut(t('sessions.ended_this'), 'info');
    return;
  }
  await loadSessions();
  $('sessions-title').focus();
  say(t('sessions.ended', { agent: describeAgent(session.user_agent) }));
}

async function endOtherSessions() {
  const others = sessions.filter((s) => !s.current);
  const failed = [];
  for (const session of others) {
    try {
      await ctx.authed('DELETE', `/v1/me/sessions/${encodeURIComponent(session.session_id)}`);
    } catch (err) {
      // One that ended meanwhile (404) is what was asked for.
      if (!(err instanceof ApiError && err.status === 404)) failed.push(err);
    }
  }
  await loadSessions();
  $('sessions-title').focus();
  if (failed.length) throw failed[0];
  say(others.length === 1 ? t('sessions.ended_other') : t('sessions.ended_others', { n: others.length }));
}

// ---------------------------------------------------------------- wiring

// context: { authed(method, path, body), run(action), reloadProfile(), showSignedOut(message, kind) }
export function initDevices(context) {
  ctx = context;
  $('passkey-add-form').addEventListener('submit', (event) => {
    event.preventDefault();
    act('passkeys-error', addPasskey, $('passkey-name'));
  });
  $('passkey-name').addEventListener('input', () => clearInvalid($('passkey-name'), 'passkeys-error'));
  $('sessions-end-others').addEventListener('click', () => act('sessions-error', endOtherSessions));
  $('sessions-refresh').addEventListener('click', () => act('sessions-error', loadSessions));
}

// Loads both cards; /security.js calls it once the profile is in.
export async function loadDevicesAndSessions() {
  await loadDevices();
  await loadSessions();
}

// Once the cards show: a link to #add-passkey (the prompt after a password sign-in on
// /fallback.html), #passkeys or #sessions lands on that card. Whether it did.
export function focusFromHash() {
  const target = { '#add-passkey': 'passkey-name', '#passkeys': 'passkeys-title', '#sessions': 'sessions-title' }[location.hash];
  if (!target) return false;
  $(target).scrollIntoView({ block: 'center' });
  $(target).focus();
  return true;
}
