// passgate fallback sign-in: username and password (POST /v1/login/password), then the second
// factor the account has: a code from an authenticator app or a recovery code
// (/v1/login/mfa/totp), or a mailed code (/v1/login/mfa/email/*). The token set is kept as
// /app.js keeps a passkey sign-in's, so / and /security.html see the same session.
// Plain ES module, no dependencies, no build step; what the pages share is in /webauthn.js (the API)
// and /page.js (the shell and its helpers).

import {
  ApiError, accessTokenExpired, api, decodeJwtPayload, loadTokens, saveTokens, withAccessToken,
} from '/webauthn.js';
import {
  $, describeError as describeCommonError, duration, fieldFails, markInvalid, oneAtATime, required, say, showFactorList, t,
} from '/page.js';

// ---------------------------------------------------------------- messages

// A TypeError's name adds nothing (a failed fetch, say); what to do next does (a wait the server
// asks for is in the common description).
function describeError(err) {
  let text = describeCommonError(err, ['Error', 'TypeError']);
  if (err?.hint) text += ` ${err.hint}`;
  return text;
}

// One request at a time, and every failure shown in the status line.
const run = oneAtATime(describeError);

// ---------------------------------------------------------------- API

async function post(path, body) {
  try {
    return await api(path, { body });
  } catch (err) {
    toReview(err);
    throw err;
  }
}

// A sign-in the risk rules held (403 held_for_review) goes to /review.html, which shows why and
// takes an appeal; the review's id and token travel in the fragment, which no server sees.
function toReview(err) {
  const problem = err instanceof ApiError ? err.problem : null;
  if (problem?.code !== 'held_for_review' || !problem.review_id || !problem.review_token) return;
  const fragment = new URLSearchParams({ id: problem.review_id, token: problem.review_token });
  window.location.assign(`/review.html#${fragment}`);
}

// ---------------------------------------------------------------- views

// Mirrored on <body data-view="password|factor|done"> so tests (and styles) can follow the flow.
function show(view) {
  document.body.dataset.view = view;
  $('password-card').hidden = view !== 'password';
  $('factor-card').hidden = view !== 'factor';
  $('done-card').hidden = view !== 'done';
  $(`${view}-title`).focus();
}

// ---------------------------------------------------------------- first step: the password

// The answer of the password step: { mfa_token, methods, expires_in }, good for one second step.
let challenge = null;

async function submitPassword() {
  const username = required('username', 'msg.need_your_username');
  const password = $('password').value;
  if (!password) {
    markInvalid($('password'));
    $('password').focus();
    throw new Error(t('fallback.need_password'));
  }
  challenge = await post('/v1/login/password', { username, password });
  $('password').value = '';
  showFactors(challenge.methods || []);
}

function showFactors(methods) {
  $('totp-form').hidden = !methods.includes('totp');
  $('email-factor').hidden = !methods.includes('email_otp');
  $('email-form').hidden = true;
  $('totp-code').value = '';
  $('email-code').value = '';
  show('factor');
  say(t('fallback.password_accepted', { duration: duration(challenge.expires_in) }));
  if (!$('totp-form').hidden) $('totp-code').focus();
}

function restart() {
  challenge = null;
  show('password');
  $('password').focus();
}

// ---------------------------------------------------------------- second step

// The mfa_token is good once and for minutes: when the server no longer knows it
// (invalid_credentials), only the password step can make a new one.
async function secondStep(action) {
  if (!challenge) throw new Error(t('fallback.need_password'));
  try {
    await action(challenge.mfa_token);
  } catch (err) {
    if (err instanceof ApiError && err.problem.code === 'invalid_credentials') {
      restart();
      err.hint = t('fallback.password_again');
    }
    throw err;
  }
}

const submitTotp = () => secondStep(async (mfaToken) => {
  const code = required('totp-code', 'fallback.need_totp');
  await signedIn(await fieldFails('totp-code', ['invalid_code'], () => post('/v1/login/mfa/totp', { mfa_token: mfaToken, code })));
});

const sendEmailCode = () => secondStep(async (mfaToken) => {
  const sent = await post('/v1/login/mfa/email/send', { mfa_token: mfaToken });
  $('email-form').hidden = false;
  $('email-code').focus();
  say(t('fallback.mailed', { duration: duration(sent.expires_in) }));
});

const submitEmailCode = () => secondStep(async (mfaToken) => {
  const code = required('email-code', 'msg.need_email_code');
  await signedIn(await fieldFails('email-code', ['invalid_code'], () => post('/v1/login/mfa/email/verify', { mfa_token: mfaToken, code })));
});

// ---------------------------------------------------------------- signed in

// Kept exactly as /app.js keeps a passkey sign-in's token set.
async function signedIn(tokens) {
  challenge = null;
  saveTokens(tokens);
  await showSignedIn();
  say(t('msg.signed_in'));
}

async function showSignedIn() {
  const me = await withAccessToken((token) => api('/v1/me', { token }), accessTokenExpired);
  $('done-username').textContent = me.username ?? '';
  showFactorList($('done-factors'), me.factors);
  showPasskeyPrompt((me.factors || []).includes('passkey'));
  show('done');
}

// After a password sign-in, the way to a passkey, worded by what the server allows such a
// sign-in (src/service/fresh.rs): an account without a passkey may add one now, which
// approves payments only after a waiting period; one with a passkey changes its passkeys
// only from a passkey sign-in.
function showPasskeyPrompt(hasPasskey) {
  let amr = [];
  try {
    amr = decodeJwtPayload(loadTokens()?.access_token, 'access token').amr || [];
  } catch {
    // Not worth a message: without the claims there is simply no prompt.
  }
  const prompt = $('passkey-prompt');
  prompt.hidden = !amr.includes('pwd');
  if (prompt.hidden) return;
  const link = $('passkey-prompt-link');
  if (hasPasskey) {
    $('passkey-prompt-title').textContent = t('fallback.prompt_has_title');
    $('passkey-prompt-text').textContent = t('fallback.prompt_has_text');
    $('passkey-prompt-wait').textContent = t('fallback.prompt_has_wait');
    link.textContent = t('fallback.prompt_has_link');
    link.href = '/security.html#passkeys';
  } else {
    $('passkey-prompt-title').textContent = t('fallback.prompt_add_title');
    $('passkey-prompt-text').textContent = t('fallback.prompt_add_text');
    $('passkey-prompt-wait').textContent = t('fallback.prompt_add_wait');
    link.textContent = t('fallback.prompt_add_title');
    link.href = '/security.html#add-passkey';
  }
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
  onSubmit('password-form', submitPassword);
  onSubmit('totp-form', submitTotp);
  onSubmit('email-form', submitEmailCode);
  $('email-send').addEventListener('click', () => run(sendEmailCode));
  $('restart').addEventListener('click', () => { say(''); restart(); });

  // Already signed in (in this tab): say so rather than offer a second sign-in. A session that
  // cannot be restored leaves the sign-in form as it is.
  if (loadTokens()?.access_token) run(() => showSignedIn().catch(() => show('password')));
}

init();
