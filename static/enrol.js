// passgate enrolment page: a user whose devices an administrator reset enters their username and
// the one-time enrolment code (POST /v1/enrol/start), makes a passkey on this device
// (navigator.credentials.create) and binds it (POST /v1/enrol/finish), which signs them in. The
// token set is kept as /app.js keeps a sign-in's, so / shows the user signed in.
// Plain ES module, no dependencies, no build step; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).

import {
  ApiError, api, creationOptionsFromJSON, credentialToJSON, describeError as describeCommonError,
  saveTokens, withAccessToken,
} from '/webauthn.js';
import { $, oneAtATime, required, say } from '/page.js';

// ---------------------------------------------------------------- messages

function describeError(err) {
  if (err && err.name === 'InvalidStateError') {
    return 'This authenticator already holds a passkey for that account (InvalidStateError).';
  }
  const text = describeCommonError(err, ['Error', 'TypeError']);
  if (err instanceof ApiError && err.problem.code === 'invalid_code') {
    return `${text} Check the username and the code; a code works once, for 24 hours (a mailed recovery code only `
      + 'after its waiting time), and a few wrong tries void it. Ask your administrator for a new one if it no longer works.';
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
  const username = required('enrol-username', 'your username');
  const code = required('enrol-code', 'the enrolment code');
  const deviceName = $('enrol-device-name').value.trim();
  say('Checking the code…');
  const start = await api('/v1/enrol/start', { body: { username, code } });
  say('Creating a passkey…');
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
  say('New device bound; you are signed in.');
}

// ---------------------------------------------------------------- recovery by email

async function mailRecovery() {
  const username = required('mail-username', 'your username');
  const { delay_seconds: delay } = await api('/v1/recovery/start', { body: { username } });
  const hours = Math.round(delay / 3600);
  say(`If ${username} has a confirmed email address, a recovery code is on its way. `
    + `It works here only after ${hours} hour${hours === 1 ? '' : 's'}; the mail says from when.`);
}

// The cancel link of the mail: /enrol.html#cancel=TOKEN. A fragment never reaches a server's logs.
const cancelToken = () => new URLSearchParams(window.location.hash.slice(1)).get('cancel');

async function cancelRecovery() {
  try {
    await api('/v1/recovery/cancel', { body: { token: cancelToken() } });
  } catch (err) {
    if (!(err instanceof ApiError && err.problem.code === 'invalid_code')) throw err;
    throw new Error('There is no account recovery to cancel with this link: it was already cancelled or used, '
      + 'or it has expired.');
  }
  window.history.replaceState(null, '', window.location.pathname);
  show('form');
  say('The account recovery is cancelled; its code no longer works.');
}

// ---------------------------------------------------------------- wiring

function init() {
  run.setBusy(false);
  if (!window.PublicKeyCredential) say('This browser does not support passkeys (WebAuthn).', 'error');
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
