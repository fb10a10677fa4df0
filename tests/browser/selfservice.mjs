// Browser test for passgate's self-service cards on /security.html (passkeys and sessions) and the
// "add a passkey" prompt after a password sign-in on /fallback.html: registers a user with a
// passkey on /, sees it listed with its authenticator's name, renames it, is refused removing the
// last way to sign in, adds a second passkey and removes it (and checks that the page told the
// browser through the WebAuthn Signal API), ends a session opened in another tab, then signs in
// with a password and a TOTP code in a second browser and follows the prompt to add a passkey,
// in headless Chromium against a running server.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT node selfservice.mjs
// Env: BASE_URL (required), TEST_USERNAME (default random), CHROMIUM (default /usr/bin/chromium),
// STEP_TIMEOUT_MS (default 15000), SCREENSHOTS (folder for the screenshots, default /tmp).
// Prints one line per step and ends with "browser: N passed, M failed" (see harness.mjs).

import { join } from 'node:path';
import {
  BASE_URL, STEP_MS, check, openContext, runBrowserTest, step, testUsername, totpCode,
  alertOrMessageError, waitFor as waitOnPage,
} from './harness.mjs';

const USERNAME = testUsername('self');
const PASSWORD = 'correct horse battery staple';
const TOKENS_KEY = 'passgate.tokens';
const SCREENSHOTS = process.env.SCREENSHOTS || '/tmp';
const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';

// ---------------------------------------------------------------- page helpers

// CDP gives ids and user handles in padded standard base64; the API in base64url.
const toB64url = (b64) => Buffer.from(b64, 'base64').toString('base64url');

// Records every Signal API call the page makes (window.__signals) and passes it on to the
// browser's own method. Only methods the browser has are wrapped: the page must feature-detect.
async function recordSignals(context) {
  await context.addInitScript(() => {
    window.__signals = [];
    for (const method of ['signalUnknownCredential', 'signalAllAcceptedCredentials']) {
      const original = window.PublicKeyCredential?.[method];
      if (typeof original !== 'function') continue;
      PublicKeyCredential[method] = function recorded(options) {
        window.__signals.push({ method, options: JSON.parse(JSON.stringify(options)) });
        return original.call(this, options);
      };
    }
  });
}

const signals = (page, method) => page.evaluate((m) => window.__signals.filter((s) => s.method === m).map((s) => s.options), method);

// A card's alert counts as the page's error here, as well as the status line's.
const waitFor = (page, ready, arg = null) => waitOnPage(page, ready, arg, alertOrMessageError);

async function waitForAlert(page, id) {
  return (await page.waitForFunction((alertId) => document.getElementById(alertId).textContent, id, { timeout: STEP_MS })).jsonValue();
}

const idle = (page) => page.waitForFunction(() => document.body.getAttribute('aria-busy') === 'false');

// The passkeys the card lists: name and the model line.
const listedPasskeys = (page) => page.$$eval('#passkeys-list li.device', (items) => items.map((li) => ({
  id: li.dataset.deviceId,
  name: li.querySelector('.device-name')?.textContent,
  model: li.querySelector('.device-model')?.textContent,
  wait: li.querySelector('.device-wait')?.textContent || null,
})));

// Evaluated in the page, with the count as its argument.
const passkeysListed = (n) => document.querySelectorAll('#passkeys-list li.device').length === n
  && document.body.getAttribute('aria-busy') === 'false';

const item = (page, name) => page.locator('#passkeys-list li.device', { has: page.locator('.device-name', { hasText: name }) });

// The page's own API call, with the tokens it keeps.
function apiFromPage(page, method, path, body) {
  return page.evaluate(async ({ key, method: m, path: p, body: b }) => {
    const { access_token: token } = JSON.parse(sessionStorage.getItem(key));
    const headers = { Authorization: `Bearer ${token}` };
    if (b !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(p, { method: m, headers, body: b === undefined ? undefined : JSON.stringify(b) });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }, { key: TOKENS_KEY, method, path, body });
}

const storedTokens = (page) => page.evaluate((key) => JSON.parse(sessionStorage.getItem(key)), TOKENS_KEY);

async function storedClaims(page) {
  const tokens = await storedTokens(page);
  return JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
}

async function shot(page, name) {
  const path = join(SCREENSHOTS, `selfservice-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`     screenshot ${path}`);
}

// Registers USERNAME on / as fallback.mjs does (see harness.mjs openContext for the presence switch).
async function registerWithPasskey(page, presence) {
  await page.goto(`${BASE_URL}/`);
  await page.fill('#username', USERNAME);
  await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && ['pending', 'off'].includes(document.body.dataset.autofill));
  await page.waitForTimeout(250);
  await presence(true);
  try {
    await page.click('#register');
    await waitFor(page, () => !document.getElementById('signed-in').hidden && document.getElementById('me-username').textContent);
  } finally {
    await presence(false);
  }
}

// A discoverable sign-in on /, as passkey.mjs does it: the authenticator answers only once the
// page's autofill request is in place, so that the click (not autofill) signs in.
async function signInWithPasskey(page, presence) {
  await page.goto(`${BASE_URL}/`);
  const autofill = await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && document.body.dataset.autofill !== 'starting' && document.body.dataset.autofill);
  if (await autofill.jsonValue() === 'pending') await page.waitForTimeout(250);
  await presence(true);
  try {
    await page.click('#login-discoverable');
    await waitFor(page, () => !document.getElementById('signed-in').hidden && document.getElementById('me-username').textContent);
  } finally {
    await presence(false);
  }
}

async function openSecurityPage(page, hash = '') {
  await page.goto(`${BASE_URL}/security.html${hash}`);
  await waitFor(page, () => !document.getElementById('passkeys-card').hidden
    && document.getElementById('sessions-list').children.length > 0
    && document.body.getAttribute('aria-busy') === 'false');
}

// ---------------------------------------------------------------- the scenario

async function mainFlow(browser) {
  const { context, page, presence, credentials, cdp, authenticatorId } = await openContext(browser);
  await recordSignals(context);
  let first;
  let secret;
  let totpStep;
  let recoveryCodes;

  await step(`register "${USERNAME}" with a passkey on /`, () => registerWithPasskey(page, presence));

  await step('/security.html lists the passkey with its authenticator\'s name, and signals it as accepted', async () => {
    await page.click('#security-link');
    await page.waitForURL(`${BASE_URL}/security.html`);
    await waitFor(page, passkeysListed, 1);
    [first] = await listedPasskeys(page);
    check(first.name === 'Passkey', `name "${first.name}"`);
    check(first.model.includes('Chromium virtual authenticator') && first.model.includes('Device-bound'), `model line "${first.model}"`);
    const [held] = await credentials();
    const accepted = await signals(page, 'signalAllAcceptedCredentials');
    check(accepted.length >= 1, 'no signalAllAcceptedCredentials call (does this Chromium have it?)');
    const last = accepted.at(-1);
    check(last.rpId === 'localhost', `rpId ${last.rpId}`);
    check(last.userId === toB64url(held.userHandle), `userId ${last.userId}, the authenticator holds ${toB64url(held.userHandle)}`);
    check(JSON.stringify(last.allAcceptedCredentialIds) === JSON.stringify([toB64url(held.credentialId)]),
      `allAcceptedCredentialIds ${JSON.stringify(last.allAcceptedCredentialIds)}`);
    check(await page.locator('#passkeys-note').isHidden(), 'a note about the sign-in shown after a passkey sign-in');
    await shot(page, 'passkeys');
  });

  await step('rename: Escape cancels, an empty name is marked invalid, Enter saves', async () => {
    await item(page, 'Passkey').locator('.rename-open').click();
    check(await page.evaluate(() => document.activeElement?.id) === 'rename-input', 'the rename field did not get focus');
    await page.fill('#rename-input', 'Throwaway');
    await page.keyboard.press('Escape');
    await page.locator('#rename-input').waitFor({ state: 'detached' });
    check((await listedPasskeys(page))[0].name === 'Passkey', 'Escape did not cancel the rename');
    check(await page.evaluate(() => document.activeElement?.classList.contains('rename-open')), 'focus not back on Rename');
    await page.keyboard.press('Enter');
    await page.fill('#rename-input', '   ');
    await page.keyboard.press('Enter');
    const error = await waitForAlert(page, 'passkeys-error');
    check(error.includes('Enter a name'), `alert: ${error}`);
    check(await page.getAttribute('#rename-input', 'aria-invalid') === 'true', 'the empty name field is not aria-invalid');
    await page.fill('#rename-input', 'Work laptop');
    await shot(page, 'rename');
    await page.keyboard.press('Enter');
    await waitFor(page, () => document.querySelector('#passkeys-list .device-name')?.textContent === 'Work laptop'
      && document.body.getAttribute('aria-busy') === 'false');
    const listed = await apiFromPage(page, 'GET', '/v1/me/devices');
    check(listed.body[0].name === 'Work laptop', `the server has "${listed.body[0].name}"`);
  });

  await step('removing the last way to sign in is refused, and the page says why', async () => {
    await item(page, 'Work laptop').locator('.remove-open').click();
    const box = page.locator('#passkeys-list .confirm');
    check((await box.textContent()).includes('only passkey'), `confirmation: ${await box.textContent()}`);
    await shot(page, 'remove-confirm');
    await box.locator('.remove-confirm').click();
    const error = await waitForAlert(page, 'passkeys-error');
    check(error.includes('was not removed') && error.includes('last way to sign in'), `alert: ${error}`);
    await idle(page);
    check((await listedPasskeys(page)).length === 1, 'the passkey is gone from the list');
    await shot(page, 'remove-refused');
  });

  await step('add a second passkey named "Phone"', async () => {
    // The virtual authenticator holds the first passkey, which the server excludes, and one
    // authenticator keeps one discoverable passkey per account: the first one leaves it, as if
    // it were on the laptop and this were the phone.
    const [held] = await credentials();
    await cdp.send('WebAuthn.removeCredential', { authenticatorId, credentialId: held.credentialId });
    await page.fill('#passkey-name', 'Phone');
    await presence(true);
    try {
      await page.click('#passkey-add');
      await waitFor(page, passkeysListed, 2);
    } finally {
      await presence(false);
    }
    const names = (await listedPasskeys(page)).map((p) => p.name);
    check(JSON.stringify(names) === '["Work laptop","Phone"]', `listed ${JSON.stringify(names)}`);
    const status = await page.textContent('#message');
    check(status.includes('Passkey “Phone” added.'), `#message: ${status}`);
    check((await signals(page, 'signalAllAcceptedCredentials')).at(-1).allAcceptedCredentialIds.length === 2, 'not signalled with both');
  });

  await step('remove "Work laptop" after confirming: the page signals the browser to forget it, and signs out', async () => {
    const laptop = (await apiFromPage(page, 'GET', '/v1/me/devices')).body.find((d) => d.name === 'Work laptop');
    await item(page, 'Work laptop').locator('.remove-open').click();
    // Escape keeps it.
    await page.keyboard.press('Escape');
    await page.locator('#passkeys-list .confirm').waitFor({ state: 'detached' });
    await item(page, 'Work laptop').locator('.remove-open').click();
    const box = page.locator('#passkeys-list .confirm');
    check((await box.textContent()).includes('signs you out here'), `confirmation: ${await box.textContent()}`);
    await box.locator('.remove-confirm').click();
    // This session began with that passkey, and the server ends it with the passkey.
    await page.locator('#sec-signed-out').waitFor({ state: 'visible' });
    check((await page.textContent('#message')).includes('you are signed out here'), `#message: ${await page.textContent('#message')}`);
    const unknown = await signals(page, 'signalUnknownCredential');
    check(unknown.length === 1, `${unknown.length} signalUnknownCredential calls`);
    check(unknown[0].rpId === 'localhost' && unknown[0].credentialId === laptop.credential_id,
      `signalUnknownCredential(${JSON.stringify(unknown[0])}), expected ${laptop.credential_id}`);
    const outcome = await page.waitForFunction(() => document.body.dataset.signalUnknownCredential);
    console.log(`     signalUnknownCredential in Chromium: ${await outcome.jsonValue()}`);
  });

  await step('sign in again with "Phone"; only it is listed', async () => {
    await signInWithPasskey(page, presence);
    await openSecurityPage(page);
    const names = (await listedPasskeys(page)).map((p) => p.name);
    check(JSON.stringify(names) === '["Phone"]', `listed ${JSON.stringify(names)}`);
  });

  await step('passkey recovery codes: made once on this page, shown once, listed as a factor', async () => {
    check((await page.textContent('#pk-recovery-state')).includes('no passkey recovery codes'), 'the state line');
    await page.click('#pk-recovery-new');
    await page.locator('#pk-recovery').waitFor({ state: 'visible' });
    const codes = await page.$$eval('#pk-recovery-codes li', (items) => items.map((li) => li.textContent.trim()));
    check(codes.length === 10 && codes.every((c) => /^[a-z2-9]{5}-[a-z2-9]{5}$/.test(c)), `codes ${JSON.stringify(codes)}`);
    check(await page.evaluate(() => document.activeElement?.id) === 'pk-recovery-title', 'focus not on the codes');
    await waitFor(page, () => document.querySelector('#sec-factors [data-factor="passkey_recovery_code"]') !== null);
    await shot(page, 'passkey-recovery-codes');
    await page.click('#pk-recovery-done');
    check(await page.locator('#pk-recovery').isHidden(), 'the codes stay on the page');
    check((await page.$$('#pk-recovery-codes li')).length === 0, 'the codes stay in the page');
  });

  await step('set a password and an authenticator app (through the API)', async () => {
    check((await apiFromPage(page, 'PUT', '/v1/me/password', { password: PASSWORD })).status === 204, 'password not set');
    const started = await apiFromPage(page, 'POST', '/v1/me/totp/start', {});
    secret = started.body.secret;
    // The test server's clock stands still: the access token's iat is its time.
    totpStep = Math.floor((await storedClaims(page)).iat / 30);
    const finished = await apiFromPage(page, 'POST', '/v1/me/totp/finish', { code: totpCode(secret, totpStep) });
    check(finished.status === 200, `TOTP not set up: ${JSON.stringify(finished.body)}`);
    recoveryCodes = finished.body.recovery_codes;
  });

  await step('sessions: one opened elsewhere is listed, and ended', async () => {
    // Another device signs in (password and a recovery code, through the API; the TOTP code of
    // the frozen clock's step is spent), as an iPhone would.
    const post = async (path, body) => {
      const res = await fetch(`${BASE_URL}${path}`, {
        method: 'POST', headers: { 'Content-Type': 'application/json', 'User-Agent': IPHONE }, body: JSON.stringify(body),
      });
      const text = await res.text();
      check(res.ok, `${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    };
    const { mfa_token: mfaToken } = await post('/v1/login/password', { username: USERNAME, password: PASSWORD });
    const otherTokens = await post('/v1/login/mfa/totp', { mfa_token: mfaToken, code: recoveryCodes[0] });
    await page.click('#sessions-refresh');
    await waitFor(page, () => document.querySelectorAll('#sessions-list li').length === 2
      && document.body.getAttribute('aria-busy') === 'false');
    const current = await page.$$eval('#sessions-list li[data-current="true"]', (items) => items.map((li) => li.textContent));
    check(current.length === 1 && current[0].includes('This browser') && current[0].includes('the passkey “Phone”'),
      `current session: ${JSON.stringify(current)}`);
    const other = await page.textContent('#sessions-list li:not([data-current])');
    check(other.includes('Safari on iOS') && other.includes('a password and a code'), `other session: ${other}`);
    await page.locator('#sessions-card').scrollIntoViewIfNeeded();
    await shot(page, 'sessions');
    await page.locator('#sessions-list li:not([data-current]) .session-end').click();
    await waitFor(page, () => document.querySelectorAll('#sessions-list li').length === 1
      && document.body.getAttribute('aria-busy') === 'false');
    check(await page.locator('#sessions-end-others').isHidden(), '"End all other sessions" offered with none left');
    const refreshed = await fetch(`${BASE_URL}/v1/token/refresh`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: otherTokens.refresh_token }),
    });
    check(refreshed.status === 401, `the ended session's refresh token still works: ${refreshed.status}`);
  });

  await step('a password sign-in of an account with a passkey: the prompt says to sign in with it', async () => {
    const other = await openContext(browser);
    try {
      await other.page.goto(`${BASE_URL}/fallback.html`);
      await other.page.fill('#username', USERNAME);
      await other.page.fill('#password', PASSWORD);
      await other.page.click('#password-submit');
      await waitFor(other.page, () => document.body.dataset.view === 'factor');
      await other.page.fill('#totp-code', recoveryCodes[1]);
      await other.page.click('#totp-submit');
      await waitFor(other.page, () => document.body.dataset.view === 'done' && !document.getElementById('passkey-prompt').hidden);
      const title = await other.page.textContent('#passkey-prompt-title');
      check(title === 'Next time, sign in with your passkey', `prompt title "${title}"`);
      check((await other.page.textContent('#passkey-prompt-wait')).includes('sign in with one of your passkeys first'), 'the prompt does not say what to do');
      await shot(other.page, 'fallback-prompt-has-passkey');
      await other.page.click('#passkey-prompt-link');
      await other.page.waitForURL(`${BASE_URL}/security.html#passkeys`);
      await waitFor(other.page, () => document.activeElement?.id === 'passkeys-title');
      const note = await other.page.textContent('#passkeys-note');
      check(note.includes('sign in with one of your'), `#passkeys-note: ${note}`);
    } finally {
      await other.context.close();
    }
  });

  await step('with a password and an authenticator app, the last passkey may go (and this session with it)', async () => {
    await openSecurityPage(page);
    const phone = (await apiFromPage(page, 'GET', '/v1/me/devices')).body.find((d) => d.name === 'Phone');
    await item(page, 'Phone').locator('.remove-open').click();
    await page.locator('#passkeys-list .confirm .remove-confirm').click();
    // Signed in with it, this session ends with it.
    await page.locator('#sec-signed-out').waitFor({ state: 'visible' });
    const left = await fetch(`${BASE_URL}/v1/login/start`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username: USERNAME }),
    }).then((res) => res.json());
    const offered = (left.publicKey.allowCredentials || []).map((c) => c.id);
    check(!offered.includes(phone.credential_id), `login still offers the removed passkey: ${JSON.stringify(offered)}`);
    // (This page load's calls only: the reload began a new record.)
    const unknown = await signals(page, 'signalUnknownCredential');
    check(unknown.length === 1 && unknown[0].credentialId === phone.credential_id,
      `signalUnknownCredential calls ${JSON.stringify(unknown)}, expected one for ${phone.credential_id}`);
    await page.waitForFunction(() => document.body.dataset.signalUnknownCredential);
    const held = (await credentials()).map((c) => toB64url(c.credentialId));
    console.log(`     the virtual authenticator ${held.includes(phone.credential_id) ? 'still holds' : 'no longer holds'} the removed passkey`);
  });

  await context.close();
  return { secret, totpStep };
}

// A second browser: a password and a code sign in, the page prompts to add a passkey.
async function fallbackFlow(browser, { secret, totpStep }) {
  const { context, page, presence } = await openContext(browser);
  await recordSignals(context);

  await step('a password sign-in lands on the "add a passkey" prompt', async () => {
    await page.goto(`${BASE_URL}/fallback.html`);
    await page.fill('#username', USERNAME);
    await page.fill('#password', PASSWORD);
    await page.click('#password-submit');
    await waitFor(page, () => document.body.dataset.view === 'factor');
    // The enrolment used up its step's code; the server accepts one step ahead.
    await page.fill('#totp-code', totpCode(secret, totpStep + 1));
    await page.click('#totp-submit');
    await waitFor(page, () => document.body.dataset.view === 'done' && !document.getElementById('passkey-prompt').hidden);
    check(await page.textContent('#passkey-prompt-title') === 'Add a passkey', 'prompt title');
    check((await page.textContent('#passkey-prompt-wait')).includes('waiting period'), 'the prompt does not mention the wait');
    await shot(page, 'fallback-prompt');
  });

  await step('the prompt leads to the add form, which says what this sign-in allows, and adds one', async () => {
    await page.click('#passkey-prompt-link');
    await page.waitForURL(`${BASE_URL}/security.html#add-passkey`);
    await waitFor(page, () => document.activeElement?.id === 'passkey-name');
    const note = await page.textContent('#passkeys-note');
    check(note.includes('no passkey yet'), `#passkeys-note: ${note}`);
    await page.fill('#passkey-name', 'New phone');
    await presence(true);
    try {
      await page.keyboard.press('Enter');
      await waitFor(page, passkeysListed, 1);
    } finally {
      await presence(false);
    }
    const [added] = await listedPasskeys(page);
    check(added.name === 'New phone' && added.wait?.includes('can approve payments from'), `listed ${JSON.stringify(added)}`);
    await shot(page, 'fallback-added');
  });

  await step('this password session may not remove the passkey, and the page says so', async () => {
    const note = await page.textContent('#passkeys-note');
    check(note.includes('still in its waiting period'), `#passkeys-note: ${note}`);
    await item(page, 'New phone').locator('.remove-open').click();
    await page.locator('#passkeys-list .confirm .remove-confirm').click();
    const error = await waitForAlert(page, 'passkeys-error');
    check(error.startsWith('Only a recent passkey sign-in may change your passkeys')
      && error.includes('still in its waiting period'), `alert: ${error}`);
    const code = await page.getAttribute('#passkeys-error', 'data-code');
    check(code === 'passkey_required', `#passkeys-error data-code is ${code}`);
    check((await signals(page, 'signalUnknownCredential')).length === 0, 'signalled a passkey the server kept');
    await idle(page);
    await shot(page, 'fallback-refused');
  });

  await step('ending this session signs the page out', async () => {
    await page.locator('#sessions-list li[data-current="true"] .session-end').click();
    await page.locator('#sec-signed-out').waitFor({ state: 'visible' });
    check(await page.evaluate((key) => sessionStorage.getItem(key), TOKENS_KEY) === null, 'tokens kept after ending the session');
    check(await page.locator('#passkeys-card').isHidden(), 'the passkeys card still shows');
  });

  await context.close();
}

// ---------------------------------------------------------------- main

let handover;
await runBrowserTest({
  intro: `browser test of the self-service cards against ${BASE_URL} as "${USERNAME}"`,
  flows: [
    async (browser) => { handover = await mainFlow(browser); },
    (browser) => fallbackFlow(browser, handover),
  ],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    busy: document.body.getAttribute('aria-busy'),
    alerts: [...document.querySelectorAll('[role="alert"]')].map((a) => a.textContent),
    passkeys: [...document.querySelectorAll('#passkeys-list li')].map((li) => li.textContent),
    session: sessionStorage.getItem('passgate.tokens') ? 'yes' : 'no',
  }),
  maxSteps: 16,
});
