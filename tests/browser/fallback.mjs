// Browser test for passgate's fallback sign-in pages (static/security.html, static/fallback.html):
// registers a user with a passkey on /, sets a password and an authenticator app (TOTP) on
// /security.html, signs out, then signs in on /fallback.html with the password and a TOTP code
// (and again with a recovery code), in headless Chromium against a running server.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT node fallback.mjs
// Env: BASE_URL (required), TEST_USERNAME (default random), CHROMIUM (default /usr/bin/chromium),
// STEP_TIMEOUT_MS (default 15000). Prints one line per step and ends with "browser: N passed, M failed"
// (the runner, launch and virtual authenticator are in harness.mjs).

import { BASE_URL, PAGES, STEP_MS, check, openContext, runBrowserTest, step, testUsername, waitFor, waitForError, totpCode } from './harness.mjs';

const USERNAME = testUsername('fb');
const PASSWORD = 'correct horse battery staple';
const TOKENS_KEY = 'passgate.tokens';
const RECOVERY_CODE = /^[a-z2-9]{5}-[a-z2-9]{5}$/;

// ---------------------------------------------------------------- page helpers

// The claims of the access token the page keeps (unverified: only read here).
async function storedClaims(page) {
  const tokens = await page.evaluate((key) => JSON.parse(sessionStorage.getItem(key)), TOKENS_KEY);
  check(tokens?.access_token, `sessionStorage ${TOKENS_KEY} holds no access token`);
  return JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
}

const factorsOnSecurityPage = (page) => page.$$eval('#sec-factors li', (items) => items.map((li) => li.dataset.factor));

async function waitSignedInOnIndex(page) {
  const username = await waitFor(page, () => !document.getElementById('signed-in').hidden
    && document.getElementById('me-username').textContent);
  check(username === USERNAME, `#me-username is "${username}", expected "${USERNAME}"`);
}

// Registers USERNAME on / as passkey.mjs does: the authenticator answers only while switched on,
// after the page's autofill request has reached the browser (see harness.mjs openContext).
async function registerWithPasskey(page, presence) {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#username').waitFor({ state: 'visible' });
  await page.fill('#username', USERNAME);
  await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && ['pending', 'off'].includes(document.body.dataset.autofill));
  await page.waitForTimeout(250);
  await presence(true);
  try {
    await page.click('#register');
    await waitSignedInOnIndex(page);
  } finally {
    await presence(false);
  }
}

async function signOutOnIndex(page) {
  await page.click('#logout');
  await page.locator('#signed-in').waitFor({ state: 'hidden' });
  const stored = await page.evaluate(() => sessionStorage.length);
  check(stored === 0, `sessionStorage still holds ${stored} item(s) after sign-out`);
}

// Fills and submits the password step of /fallback.html.
async function submitPassword(page, password) {
  await page.fill('#username', USERNAME);
  await page.fill('#password', password);
  await page.click('#password-submit');
}

// After the password step: the second factor form, then the signed-in card.
async function signInWithCode(page, code) {
  await waitFor(page, () => document.body.dataset.view === 'factor');
  check(await page.locator('#totp-form').isVisible(), '#totp-form not shown for an account with TOTP');
  check(!(await page.locator('#email-factor').isVisible()), '#email-factor shown for an account without a verified email');
  await page.fill('#totp-code', code);
  await page.click('#totp-submit');
  const username = await waitFor(page, () => document.body.dataset.view === 'done'
    && document.getElementById('done-username').textContent);
  check(username === USERNAME, `#done-username is "${username}", expected "${USERNAME}"`);
  const claims = await storedClaims(page);
  for (const method of ['pwd', 'otp']) check(claims.amr?.includes(method), `amr ${JSON.stringify(claims.amr)} lacks "${method}"`);
}

// ---------------------------------------------------------------- the scenario

async function mainFlow(browser) {
  const { context, page, presence } = await openContext(browser);
  let secret;
  let enrolStep;
  let recoveryCodes;

  await step('the TOTP helper gives the RFC 6238 test vector', async () => {
    // Appendix B, SHA-1, T = 59 s: 94287082, of which a six-digit code is the last six digits.
    const code = totpCode('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ', Math.floor(59 / 30));
    check(code === '287082', `got ${code}`);
  });

  await step(`register "${USERNAME}" with a passkey on /`, () => registerWithPasskey(page, presence));

  await step('/ links to /security.html (#security-link)', async () => {
    await page.click('#security-link');
    await page.waitForURL(`${BASE_URL}/security.html`);
    await waitFor(page, () => !document.getElementById('sec-overview').hidden);
    const factors = await factorsOnSecurityPage(page);
    check(JSON.stringify(factors) === '["passkey"]', `factors ${JSON.stringify(factors)}, expected only passkey`);
    check(!(await page.locator('#current-password').isVisible()), '#current-password shown though no password is set');
  });

  await step('set a password (fresh passkey sign-in, no current password)', async () => {
    await page.fill('#new-password', PASSWORD);
    await page.fill('#new-password-repeat', PASSWORD);
    await page.click('#password-save');
    await waitFor(page, () => [...document.querySelectorAll('#sec-factors li')].some((li) => li.dataset.factor === 'password'));
    check(await page.inputValue('#new-password') === '', '#new-password not cleared');
    check(await page.locator('#current-password').isVisible(), '#current-password not offered once a password is set');
  });

  await step('a too-short password shows validation_failed', async () => {
    await page.fill('#current-password', PASSWORD);
    await page.fill('#new-password', 'short');
    await page.fill('#new-password-repeat', 'short');
    await page.click('#password-save');
    const error = await waitForError(page);
    check(error.includes('validation_failed'), `#message: ${error}`);
    check(await page.getAttribute('#new-password', 'aria-invalid') === 'true', '#new-password not marked aria-invalid');
    for (const id of ['#current-password', '#new-password', '#new-password-repeat']) await page.fill(id, '');
  });

  await step('start TOTP enrolment: QR code, secret and otpauth link shown', async () => {
    await page.click('#totp-start');
    await page.locator('#totp-enrol').waitFor({ state: 'visible' });
    const qr = page.locator('#totp-qr');
    await qr.waitFor({ state: 'visible' });
    const image = await waitFor(page, () => {
      const img = document.getElementById('totp-qr');
      return img.complete && img.naturalWidth > 0
        && { src: img.getAttribute('src'), width: img.naturalWidth, height: img.naturalHeight };
    });
    check(image.src.startsWith('data:image/svg+xml;base64,'), `#totp-qr src starts "${image.src.slice(0, 40)}"`);
    check(image.width >= 100 && image.height >= 100, `QR image is ${image.width}x${image.height}`);
    const box = await qr.boundingBox();
    check(box && box.width >= 100 && box.height >= 100, `QR image is displayed at ${JSON.stringify(box)}`);
    // The QR code travels as an image: no markup of it lands in the page.
    check(await page.locator('#totp-enrol svg').count() === 0, 'an <svg> element was inserted into the page');
    secret = (await page.textContent('#totp-secret')).replace(/\s/g, '');
    check(/^[A-Z2-7]{32}$/.test(secret), `#totp-secret is "${secret}", expected 32 base32 characters`);
    const uri = await page.getAttribute('#totp-uri', 'href');
    check(uri.startsWith('otpauth://totp/') && uri.includes(`secret=${secret}`), `#totp-uri href is "${uri}"`);
  });

  await step('a wrong code does not confirm the enrolment (invalid_code)', async () => {
    // The server's time, not ours: the test server's clock stands still (ManualClock), so the
    // access token's iat is the only trustworthy reading of it.
    enrolStep = Math.floor((await storedClaims(page)).iat / 30);
    const near = [-1, 0, 1].map((d) => totpCode(secret, enrolStep + d));
    const wrong = [...Array(10).keys()].map((d) => String((Number(near[1]) + 1 + d) % 1_000_000).padStart(6, '0'))
      .find((code) => !near.includes(code));
    await page.fill('#totp-code', wrong);
    await page.click('#totp-confirm');
    const error = await waitForError(page);
    check(error.includes('invalid_code'), `#message: ${error}`);
    check(await page.getAttribute('#totp-code', 'aria-invalid') === 'true', '#totp-code not marked aria-invalid');
    check(await page.locator('#totp-enrol').isVisible(), 'the enrolment form went away after a wrong code');
  });

  await step('confirm TOTP with the current code: 10 recovery codes shown', async () => {
    await page.fill('#totp-code', totpCode(secret, enrolStep));
    await page.click('#totp-confirm');
    // Done when the page is idle again: it shows the codes first, then reloads the profile.
    await waitFor(page, () => !document.getElementById('recovery').hidden && document.body.getAttribute('aria-busy') === 'false');
    recoveryCodes = await page.$$eval('#recovery-codes li', (items) => items.map((li) => li.textContent.trim()));
    check(recoveryCodes.length === 10, `${recoveryCodes.length} recovery codes shown`);
    check(recoveryCodes.every((code) => RECOVERY_CODE.test(code)), `recovery codes ${JSON.stringify(recoveryCodes)}`);
    check(new Set(recoveryCodes).size === 10, 'recovery codes repeat');
    check(!(await page.locator('#totp-enrol').isVisible()), '#totp-enrol still shown');
    check(await page.getAttribute('#totp-qr', 'src') === null, 'the QR code stays in the page after enrolment');
    const factors = await factorsOnSecurityPage(page);
    for (const factor of ['passkey', 'password', 'totp', 'recovery_code']) {
      check(factors.includes(factor), `factors ${JSON.stringify(factors)} lack "${factor}"`);
    }
    check(await page.locator('#totp-remove').isVisible(), '#totp-remove not offered');
  });

  await step('sign out on /', async () => {
    await page.goto(`${BASE_URL}/`);
    await waitSignedInOnIndex(page);
    await signOutOnIndex(page);
  });

  await step('/security.html signed out says sign in first', async () => {
    await page.goto(`${BASE_URL}/security.html`);
    await page.locator('#sec-signed-out').waitFor({ state: 'visible' });
    check(!(await page.locator('#sec-overview').isVisible()), '#sec-overview shown without a session');
    const link = await page.getAttribute('#sec-signed-out a[href="/"]', 'href');
    check(link === '/', 'no link to / on the signed-out card');
  });

  await step('/ links to /fallback.html (#fallback-link)', async () => {
    await page.goto(`${BASE_URL}/`);
    await page.click('#fallback-link');
    await page.waitForURL(`${BASE_URL}/fallback.html`);
    await page.locator('#password-form').waitFor({ state: 'visible' });
  });

  await step('a wrong password shows invalid_credentials', async () => {
    await submitPassword(page, `${PASSWORD}!`);
    const error = await waitForError(page);
    check(error.includes('invalid_credentials'), `#message: ${error}`);
    check(await page.evaluate(() => document.body.dataset.view) === 'password', 'left the password step');
  });

  await step('sign in with the password and the next step\'s TOTP code', async () => {
    await submitPassword(page, PASSWORD);
    // The enrolment used up its step's code (each step is good once); the server accepts one
    // step ahead, which spares waiting 30 s for the next.
    await signInWithCode(page, totpCode(secret, enrolStep + 1));
  });

  await step('the fallback session works on / and /security.html', async () => {
    const me = await page.evaluate(async (key) => {
      const { access_token: token } = JSON.parse(sessionStorage.getItem(key));
      const res = await fetch('/v1/me', { headers: { Authorization: `Bearer ${token}` } });
      return { status: res.status, body: await res.json() };
    }, TOKENS_KEY);
    check(me.status === 200, `GET /v1/me from the page: ${me.status} ${JSON.stringify(me.body)}`);
    check(me.body.username === USERNAME, `GET /v1/me is ${me.body.username}`);
    for (const factor of ['password', 'totp']) check(me.body.factors.includes(factor), `factors ${JSON.stringify(me.body.factors)} lack "${factor}"`);
    await page.click('#done-home');
    await waitSignedInOnIndex(page);
    await page.click('#security-link');
    await waitFor(page, () => !document.getElementById('sec-overview').hidden
      && document.getElementById('sec-username').textContent);
  });

  await step('a password sign-in may not remove TOTP: the page says to sign in with the passkey', async () => {
    // (On /security.html since the step before.) A password and a code can be phished; only a
    // passkey sign-in may change what guards the account (403 passkey_required).
    page.once('dialog', (dialog) => dialog.accept());
    await page.click('#totp-remove');
    const error = await waitForError(page);
    check(error.startsWith('Sign in with your passkey first'), `#message: ${error}`);
    check(error.includes('passkey_required'), `#message: ${error}`);
    check(await page.locator('#totp-remove').isVisible(), 'TOTP looks removed after a refusal');
  });

  await step('sign out on /', async () => {
    await page.goto(`${BASE_URL}/`);
    await waitSignedInOnIndex(page);
    await signOutOnIndex(page);
  });

  await step('sign in with the password and a recovery code', async () => {
    await page.goto(`${BASE_URL}/fallback.html`);
    await submitPassword(page, PASSWORD);
    await signInWithCode(page, recoveryCodes[0].toUpperCase());
  });

  await context.close();
}

// A page's forms before its script runs (a slow link, or a user quicker than the page): what
// is typed and submitted must not leave in a URL (history, proxies' logs, the Referer).
// JavaScript off stands for "not yet run", deterministically.
const TYPED = 'typed-before-the-script';

async function beforeScriptFlow(browser) {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const requests = [];
  page.on('request', (request) => requests.push(`${request.method()} ${request.url()}`));

  await step('before the page\'s script runs, Enter or a click submits nothing (no secret in a URL)', async () => {
    for (const path of PAGES) {
      await page.goto(`${BASE_URL}${path}`);
      const methods = await page.$$eval('form', (forms) => forms.map((f) => `${f.id}:${f.method}`));
      const get = methods.filter((m) => !m.endsWith(':post'));
      check(get.length === 0, `${path}: forms that would submit in a URL: ${get.join(', ')}`);
      // A disabled default button stops implicit submission (Enter) too: HTML, "implicit submission".
      const live = await page.$$eval('form button[type=submit]', (buttons) => buttons.filter((b) => !b.disabled).map((b) => b.id));
      check(live.length === 0, `${path}: submit buttons live before the script ran: ${live.join(', ')}`);
      requests.length = 0;
      const fields = page.locator('form input:visible:not([type=checkbox]):not([type=radio]), form textarea:visible');
      for (let i = 0; i < await fields.count(); i++) {
        const field = fields.nth(i);
        await field.fill(TYPED);
        await field.press('Enter');
      }
      const buttons = page.locator('form button[type=submit]:visible');
      for (let i = 0; i < await buttons.count(); i++) {
        await buttons.nth(i).click({ force: true, noWaitAfter: true });
      }
      await page.waitForTimeout(200);
      check(page.url() === `${BASE_URL}${path}`, `${path}: the page went to ${page.url()}`);
      const sent = requests.filter((r) => r.includes(TYPED) || !r.startsWith('GET '));
      check(sent.length === 0, `${path}: submitted before its script ran: ${sent.join(', ')}`);
    }
  });

  await context.close();
}

// ---------------------------------------------------------------- main

await runBrowserTest({
  intro: `browser test of the fallback sign-in pages against ${BASE_URL} as "${USERNAME}"`,
  flows: [mainFlow, beforeScriptFlow],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    view: document.body.dataset.view,
    busy: document.body.getAttribute('aria-busy'),
    session: sessionStorage.getItem('passgate.tokens') ? 'yes' : 'no',
  }),
  maxSteps: 23,
});
