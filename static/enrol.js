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
    return `${text} Check the username and the code; a code works once, for 24 hours, and a few wrong tries void it. `
      + 'Ask your administrator for a new one if it no longer works.';
  }
  return text;
}

// One enrolment at a time; the button stays off where there is no WebAuthn.
const run = oneAtATime(describeError, (on) => {
  $('enrol-submit').disabled = on || !window.PublicKeyCredential;
});

// ---------------------------------------------------------------- busy

// Mirrored on <body data-view="form|done"> so tests (and styles) can follow the flow.
function show(view) {
  document.body.dataset.view = view;
  $('enrol-card').hidden = view !== 'form';
  $('done-card').hidden = view !== 'done';
  $(view === 'form' ? 'enrol-title' : 'done-title').focus();
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

// ---------------------------------------------------------------- wiring

function init() {
  run.setBusy(false);
  if (!window.PublicKeyCredential) say('This browser does not support passkeys (WebAuthn).', 'error');
  $('enrol-form').addEventListener('submit', (event) => {
    event.preventDefault();
    run(enrol);
  });
}

init();
