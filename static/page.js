// The shell every page shares, and the helpers its scripts use besides the API (/webauthn.js):
// element lookup, the status line, required inputs, and running one action at a time.
// Plain ES module, no build step. Every page script imports it, so the shell below is in place
// (module dependencies run first) before the page's own script looks for anything; and it
// imports /i18n.js, so the page's marked text is in the chosen language by then too.

import { LANGUAGES, describeError, duration as wordedDuration, errorCode, lang, setLanguage, t, translate } from '/i18n.js';

export const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the shell

// Built from <main>'s data attributes, so no page repeats (or drifts from) the markup; the first
// three are message keys of /i18n/*.json:
//   data-tagline  the line under the title
//   data-title    the title, "passgate" unless given (the admin console is "passgate admin")
//   data-back     the text of the link back to /, if the page has one
//   data-status   the status line's id, "message" unless given (the pay page keeps its
//                 "pay-message", which its browser test reads)
function element(tag, props, ...children) {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
}

function buildShell() {
  const main = document.querySelector('main');
  const { tagline = '', title = 'passgate', back, status = 'message' } = main.dataset;
  const top = [element('header', { className: 'masthead' },
    languageSwitch(),
    element('h1', { textContent: t(title) }),
    element('p', { className: 'tagline', textContent: tagline && t(tagline) }))];
  if (back) top.push(element('p', { className: 'back' }, element('a', { href: '/', textContent: `← ${t(back)}` })));
  main.prepend(...top);
  const line = element('p', { id: status, className: '' });
  line.setAttribute('role', 'status');
  line.setAttribute('aria-live', 'polite');
  line.dataset.statusLine = '';
  main.append(line);
  return line;
}

// English / 简体中文: one button per language, each named in its own language (lang set, so a
// screen reader reads it right); the current one is pressed. Choosing one reloads the page
// (see setLanguage in /i18n.js).
function languageSwitch() {
  const group = element('div', { className: 'lang-switch' });
  group.setAttribute('role', 'group');
  group.setAttribute('aria-label', t('lang.switch'));
  for (const [code, name] of Object.entries(LANGUAGES)) {
    const button = element('button', { type: 'button', textContent: name, lang: code });
    button.dataset.lang = code;
    button.setAttribute('aria-pressed', String(code === lang));
    button.addEventListener('click', () => setLanguage(code));
    group.append(button);
  }
  return group;
}

document.documentElement.lang = lang;
translate();
const statusLine = buildShell();

// ---------------------------------------------------------------- helpers

export { describeError, t };

// Writes the status line; kind is its CSS class: info, ok or error. An error is an alert (read out
// at once), anything else a polite status; code is the server's problem code, if any, mirrored
// as data-code for scripts and tests (the text is a sentence of the page's language).
export function say(text, kind = 'info', code = '') {
  const alert = Boolean(text) && kind === 'error';
  statusLine.setAttribute('role', alert ? 'alert' : 'status');
  statusLine.setAttribute('aria-live', alert ? 'assertive' : 'polite');
  statusLine.dataset.code = code;
  statusLine.textContent = text;
  statusLine.className = text ? kind : '';
}

// Marks the input invalid, described by the status line that says why, until it is edited.
export function markInvalid(input) {
  input.setAttribute('aria-invalid', 'true');
  const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
  if (!described.includes(statusLine.id)) {
    input.setAttribute('aria-describedby', [...described, statusLine.id].join(' '));
    input.dataset.describedByStatus = '';
  }
  input.addEventListener('input', () => clearInvalid(input), { once: true });
}

export function clearInvalid(input) {
  input.removeAttribute('aria-invalid');
  if (input.dataset.describedByStatus === undefined) return;
  delete input.dataset.describedByStatus;
  const rest = input.getAttribute('aria-describedby').split(' ').filter((id) => id && id !== statusLine.id);
  if (rest.length) input.setAttribute('aria-describedby', rest.join(' '));
  else input.removeAttribute('aria-describedby');
}

// Runs action; when it fails with one of the problem codes, marks the input with id invalid (the
// status line then says why) before passing the failure on.
export async function fieldFails(id, codes, action) {
  try {
    return await action();
  } catch (err) {
    if (codes.includes(errorCode(err))) markInvalid($(id));
    throw err;
  }
}

// An input's trimmed value, or (empty) focus on it, mark it invalid and fail with the message
// of whatKey (what is missing, e.g. "Enter a username first.").
export function required(id, whatKey) {
  const input = $(id);
  const value = input.value.trim();
  if (!value) {
    markInvalid(input);
    input.focus();
    throw new Error(t(whatKey));
  }
  clearInvalid(input);
  return value;
}

export const duration = wordedDuration;

// The factors of GET /v1/me as a person reads them ("Passkey, Password"), into element; the
// names the API uses stay on it as data-factors (space-separated) for scripts and tests.
export function showFactorList(element, factors) {
  const list = Array.isArray(factors) ? factors.map(String) : [];
  element.dataset.factors = list.join(' ');
  element.textContent = list.length
    ? list.map((factor) => (t(`factor.${factor}`) === `factor.${factor}` ? factor : t(`factor.${factor}`))).join(t('list.separator'))
    : '—';
}

// Disables every button of the page's main while an action runs.
//
// Every form's submit button starts disabled in the HTML, and every form says method="post":
// until a page's script has wired its forms (after the catalogues load, so not at once on a slow
// link), Enter or a click must not submit natively, which would put what was typed (a password,
// a code) in the URL. A page's init enables them, with its runner's setBusy(false).
export function disableButtons(on) {
  for (const button of document.querySelectorAll('main button')) button.disabled = on;
}

// A runner of one action at a time: a click while one runs is ignored; meanwhile the page is
// aria-busy and setBusy(true) disables its controls; a failure goes to the status line, worded
// by describe. The runner resolves to whether the action ran (false when it was ignored).
export function oneAtATime(describe, setBusy = disableButtons) {
  let busy = false;
  const busyNow = (on) => {
    busy = on;
    document.body.setAttribute('aria-busy', String(on));
    setBusy(on);
  };
  const run = async (action) => {
    if (busy) return false;
    busyNow(true);
    // The last outcome's message would be stale once this one starts.
    say('');
    try {
      await action();
    } catch (err) {
      say(describe(err), 'error', errorCode(err));
    } finally {
      busyNow(false);
    }
    return true;
  };
  run.setBusy = busyNow;
  return run;
}
