// The pages' language: English or Simplified Chinese, the messages of each in one catalogue
// (/i18n/en.json, /i18n/zh-CN.json, the same keys in both). A choice made with the switch in the
// page header (kept in localStorage) wins; else the browser's languages (what it sends as
// Accept-Language) decide. It also words errors, the server's problem codes among them, as
// sentences of the chosen language. Plain ES module, no build step; page.js imports it first, so
// the catalogue is loaded (top-level await) before any page script runs.

import { ApiError, api, loadTokens, withAccessToken } from '/webauthn.js';

const STORE_KEY = 'passgate.lang';
export const LANGUAGES = { en: 'English', 'zh-CN': '简体中文' };

// The first of the preferred tags that names a language the pages have: any Simplified Chinese
// tag (zh, zh-CN, zh-SG, zh-Hans…) is zh-CN; Traditional (zh-TW, zh-Hant…) is not, so it falls
// through to the next preference and finally to English.
export function pickLanguage(stored, preferred) {
  if (stored && Object.hasOwn(LANGUAGES, stored)) return stored;
  for (const tag of preferred || []) {
    const lower = String(tag).toLowerCase();
    if (lower === 'zh' || lower === 'zh-cn' || lower === 'zh-sg' || lower.startsWith('zh-hans')) return 'zh-CN';
    if (lower === 'en' || lower.startsWith('en-')) return 'en';
  }
  return 'en';
}

function storedChoice() {
  // Storage may be off (a privacy setting): then the browser's languages decide every time.
  try { return localStorage.getItem(STORE_KEY); } catch { return null; }
}

export const lang = pickLanguage(storedChoice(), navigator.languages?.length ? navigator.languages : [navigator.language]);

async function load(code) {
  const res = await fetch(`/i18n/${code}.json`, { credentials: 'same-origin' });
  if (!res.ok) throw new Error(`/i18n/${code}.json: HTTP ${res.status}`);
  return res.json();
}

// English is also the fallback for a key another catalogue lacks (a test keeps them equal).
const [english, chosen] = await Promise.all([
  load('en').catch(() => ({})),
  lang === 'en' ? null : load(lang).catch(() => null),
]);
const messages = chosen || english;

export const has = (key) => Object.hasOwn(messages, key) || Object.hasOwn(english, key);

// The message key in the chosen language with its {placeholders} filled from params; a key no
// catalogue has is shown as it is (so a page's data-title of "passgate" stays "passgate").
export function t(key, params = {}) {
  const text = messages[key] ?? english[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (Object.hasOwn(params, name) ? String(params[name]) : whole));
}

// Fills the marked elements under root: data-i18n sets the text; data-i18n-attr sets attributes,
// as "attribute:key" pairs separated by ";".
export function translate(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}

// Keeps the choice and reloads: every page keeps what matters (the session) in storage, and a
// reload words everything, the messages made in script included, in the new language.
// Signed in, the account's mail (notices, codes) follows the choice too (PUT /v1/me/language);
// that is best effort: the page switches whether or not the server takes it.
export async function setLanguage(code) {
  if (!Object.hasOwn(LANGUAGES, code) || code === lang) return;
  try { localStorage.setItem(STORE_KEY, code); } catch { /* the reload then keeps the browser's choice */ }
  if (loadTokens()?.access_token) {
    const expired = (err) => err instanceof ApiError && err.status === 401;
    const put = (token) => api('/v1/me/language', { method: 'PUT', body: { language: code }, token });
    try { await withAccessToken(put, expired); } catch { /* signed out meanwhile, or offline */ }
  }
  window.location.reload();
}

// ---------------------------------------------------------------- errors

// Problem codes whose detail names what the sentence cannot (which field, which limit, why).
const DETAILED = new Set(['bad_request', 'validation_failed', 'forbidden', 'passkey_required', 'not_found',
  'webauthn_failed', 'mfa_required', 'account_locked']);

// What a page shows for err: for an API problem, its code's sentence (plus the server's detail
// where it adds specifics, and the request id, which support can look up); for the browser's
// terse WebAuthn errors, what their name means; else the message, with the error's name unless it
// is one of plainNames.
export function describeError(err, plainNames = ['Error']) {
  if (err instanceof ApiError) {
    const p = err.problem || {};
    const known = p.code && has(`error.${p.code}`);
    const parts = [known ? t(`error.${p.code}`) : (p.detail || p.title || t('error.http', { status: err.status }))];
    if (known && p.detail && DETAILED.has(p.code)) parts.push(t('error.detail', { detail: p.detail }));
    if (err.retryAfter) parts.push(t('error.retry_after', { duration: duration(err.retryAfter) }));
    if (p.request_id) parts.push(t('error.request_id', { id: p.request_id }));
    return parts.join(' ');
  }
  if (err && has(`error.${err.name}`) && ['NotAllowedError', 'InvalidStateError', 'SecurityError'].includes(err.name)) {
    return t(`error.${err.name}`);
  }
  const message = err?.message || String(err);
  return err?.name && !plainNames.includes(err.name) ? t('error.named', { message, name: err.name }) : message;
}

// The problem code of err, if the server sent one: pages mirror it on the status line
// (data-code) for scripts and tests, since the text is a sentence of the chosen language.
export const errorCode = (err) => (err instanceof ApiError ? err.problem?.code || '' : '');

export const duration = (secs) => (secs >= 120
  ? t('duration.minutes', { n: Math.round(secs / 60) })
  : t('duration.seconds', { n: secs }));
