// passgate enrolment page: a user whose devices an administrator reset enters their username and
// the one-time enrolment code (POST /v1/enrol/start), makes a passkey on this device
// (navigator.credentials.create) and binds it (POST /v1/enrol/finish), which signs them in. The
// token set is kept as /app.js keeps a sign-in's, so / shows the user signed in.
// Plain ES module, no dependencies, no build step; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).

import {
  ApiError, api, creationOptionsFromJSON, credentialToJSON, saveTokens, withAccessToken,
} from '/webauthn.js';
import { $, describeError as describeCommonError, fieldFails, oneAtATime, required, say, t } from '/page.js';

// ---------------------------------------------------------------- messages

function describeError(err) {
  const text = describeCommonError(err, ['Error', 'TypeError']);
  if (err instanceof ApiError && err.problem.code === 'invalid_code') {
    return `${text} ${t('enrol.invalid_code_hint')}`;
  }
  return text;
}

// One action at a time; enrolment stays off where there is no WebAuthn.
const run = oneAtATime(describeError, (on) => {
  $('enrol-submit').disabled = on || !window.PublicKeyCredential;
  $('mail-submit').disabled = on;
  $('cancel-submit').disabled = on;
});

// ---------------------------------------------------------------- busy

// Mirrored on <body data-view="form|done"> so tests (and styles) can follow the flow.
function show(view) {
  document.body.dataset.view = view;
  $('enrol-card').hidden = view !== 'form';
  $('mail-card').hidden = view !== 'form';
  $('done-card').hidden = view !== 'done';
  $('cancel-card').hidden = view !== 'cancel';
  $({ form: 'enrol-title', done: 'done-title', cancel: 'cancel-title' }[view]).focus();
}

// ---------------------------------------------------------------- enrolment

async function enrol() {
  const username = required('enrol-username', 'msg.need_your_username');
  const code = required('enrol-code', 'enrol.need_code');
  const deviceName = $('enrol-device-name').value.trim();
  say(t('enrol.checking'));
  const start = await fieldFails('enrol-code', ['invalid_code'], () => api('/v1/enrol/start', { body: { username, code } }));
  say(t('msg.creating_passkey'));
  const credential = await navigator.credentials.create({ publicKey: creationOptionsFromJSON(start.publicKey) });
  const body = { ceremony_id: start.ceremony_id, credential: credentialToJSON(credential) };
  if (deviceName) body.device_name = deviceName;
  const tokens = await api('/v1/enrol/finish', { body });
  // The code is used up: it should not stay in the form.
  $('enrol-code').value = '';
  saveTokens(tokens);
  const expired = (err) => err instanceof ApiError && err.status === 401 && err.problem.code === 'unauthorized';
  const me = await withAccessToken((token) => api('/v1/me', { token }), expired);
  $('done-username').textContent = me.username ?? username;
  $('done-device').textContent = deviceName || tokens.device_id || '—';
  show('done');
  say(t('enrol.bound'));
}

// ---------------------------------------------------------------- recovery by email

async function mailRecovery() {
  const username = required('mail-username', 'msg.need_your_username');
  const { delay_seconds: delay } = await api('/v1/recovery/start', { body: { username } });
  const hours = Math.round(delay / 3600);
  say(t(hours === 1 ? 'enrol.mailed_one_hour' : 'enrol.mailed', { username, hours }));
}

// The cancel link of the mail: /enrol.html#cancel=TOKEN. A fragment never reaches a server's logs.
const cancelToken = () => new URLSearchParams(window.location.hash.slice(1)).get('cancel');

async function cancelRecovery() {
  try {
    await api('/v1/recovery/cancel', { body: { token: cancelToken() } });
  } catch (err) {
    if (!(err instanceof ApiError && err.problem.code === 'invalid_code')) throw err;
    throw new Error(t('enrol.nothing_to_cancel'));
  }
  window.history.replaceState(null, '', window.location.pathname);
  show('form');
  say(t('enrol.cancelled'));
}

// ---------------------------------------------------------------- wiring

function init() {
  run.setBusy(false);
  if (!window.PublicKeyCredential) say(t('msg.no_webauthn'), 'error');
  $('enrol-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run(enrol);
  });
  $('mail-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run(mailRecovery);
  });
  $('cancel-submit').addEventListener('click', () => run(cancelRecovery));
  if (cancelToken()) show('cancel');
}

init();
