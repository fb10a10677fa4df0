// passgate sign-in options page, its trusted browsers card: lists the browsers the signed-in user
// marked trusted (/v1/me/trusted-devices), removes them, and offers to trust this one after a
// passkey sign-in. The browser is told by an HttpOnly cookie that no script here can read: the
// server says which listed browser is this one ("current"). /security.js owns the page and
// calls initTrusted. Plain ES module, no dependencies, no build step.

import { ApiError, decodeJwtPayload, loadTokens } from '/webauthn.js';
import { $, describeError as describeCommonError, say, t } from '/page.js';
import { errorCode, lang } from '/i18n.js';

let ctx = null;
let trusted = [];

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const dateText = (iso) => new Date(iso).toLocaleString(lang, { dateStyle: 'medium', timeStyle: 'short' });

// The message key's text with a <time> for iso where its {time} placeholder is.
function timed(key, iso) {
  const [before, after = ''] = t(key, { time: '\u0000' }).split('\u0000');
  return [before, el('time', { dateTime: iso, textContent: dateText(iso) }), after].filter((part) => part !== '');
}

const showAlert = (text, code = '') => {
  $('trusted-error').textContent = text;
  $('trusted-error').dataset.code = code;
};

function describeError(err) {
  if (err instanceof ApiError && err.problem.code === 'passkey_required') {
    const parts = [t('trusted.passkey_required')];
    if (err.problem.request_id) parts.push(t('error.request_id', { id: err.problem.request_id }));
    return parts.join(' ');
  }
  return describeCommonError(err, ['Error', 'TypeError']);
}

function act(action) {
  return ctx.run(async () => {
    showAlert('');
    try {
      await action();
    } catch (err) {
      showAlert(describeError(err), errorCode(err));
    }
  });
}

// How the current session began (read, not verified: only for what to offer; the server decides).
function passkeySession() {
  let amr = [];
  try {
    amr = decodeJwtPayload(loadTokens()?.access_token, t('app.access_token')).amr || [];
  } catch {
    return false;
  }
  return amr.includes('hwk') && amr.includes('user') && !amr.includes('new') && !amr.includes('enrol');
}

// The server's label is "Browser on System" in fixed words (src/service/trusted.rs); said in the
// page's language as the sessions card says a user agent.
function labelText(label) {
  const [browser, system] = String(label || '').split(' on ');
  if (!browser || browser === 'Unknown browser') return t('sessions.unknown_agent');
  return system ? t('sessions.agent_on', { browser, system }) : browser;
}

function trustedItem(device) {
  const name = labelText(device.label);
  const title = el('p', { className: 'session-agent' }, el('strong', { textContent: name }));
  if (device.current) title.append(' ', el('span', { className: 'badge', textContent: t('sessions.this_browser') }));
  const remove = el('button', { type: 'button', className: 'trusted-remove', textContent: t('trusted.remove') });
  remove.setAttribute('aria-label', t('trusted.remove_label', { name, time: dateText(device.created_at) }));
  remove.addEventListener('click', () => act(() => removeTrust(device)));
  const item = el('li', { className: 'session' },
    el('div', { className: 'session-body' },
      title,
      el('p', { className: 'device-meta' }, ...timed('trusted.since', device.created_at), ' · ', ...timed('trusted.until', device.expires_at)),
      el('p', { className: 'device-meta' }, ...timed('trusted.last_seen', device.last_seen_at)),
      el('div', { className: 'device-actions' }, remove)));
  item.dataset.trustedDeviceId = device.trusted_device_id;
  if (device.current) item.dataset.current = 'true';
  return item;
}

function render() {
  const list = $('trusted-list');
  list.replaceChildren(...trusted.map(trustedItem));
  if (!trusted.length) list.append(el('li', { className: 'empty', textContent: t('trusted.none') }));
  const here = trusted.some((d) => d.current);
  const passkey = passkeySession();
  // Offered after a passkey sign-in, to a browser not trusted yet.
  $('trusted-add').hidden = here || !passkey;
  $('trusted-note').textContent = !here && !passkey ? t('trusted.note_passkey_first') : '';
  $('trusted-note').hidden = here || passkey;
}

export async function loadTrusted() {
  trusted = await ctx.authed('GET', '/v1/me/trusted-devices');
  render();
}

async function trustThisBrowser() {
  const added = await ctx.authed('POST', '/v1/me/trusted-devices', {});
  await loadTrusted();
  $('trusted-title').focus();
  say(t('trusted.added', { time: dateText(added.expires_at) }));
}

async function removeTrust(device) {
  await ctx.authed('DELETE', `/v1/me/trusted-devices/${encodeURIComponent(device.trusted_device_id)}`);
  await loadTrusted();
  $('trusted-title').focus();
  say(device.current ? t('trusted.removed_this') : t('trusted.removed', { name: labelText(device.label) }));
}

// context: { authed(method, path, body), run(action) }
export function initTrusted(context) {
  ctx = context;
  $('trusted-add').addEventListener('click', () => act(trustThisBrowser));
}
