// Browser test for passgate's admin console (static/admin.html) and enrolment page
// (static/enrol.html): registers a user on /, makes it an admin with the passgate CLI, signs in
// on /admin.html with its passkey, finds "lost-phone-user" (made beforehand by
// tests/api/browser.rs, with a passkey and a session), resets their devices, locks and unlocks
// the account, reads the audit trail and exports it as CSV; then, in a second browser context
// (a new device), binds a new passkey on /enrol.html with the enrolment code the admin page
// showed, checks that the code works only once, and lets the admin unbind the new device.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT PASSGATE_BIN=../../target/debug/passgate \
//     DATABASE_URL=sqlite:/path/to/passgate.db node admin.mjs
// Env: BASE_URL, PASSGATE_BIN (the passgate binary, for `passgate admin grant`), DATABASE_URL (the
// server's database) all required; TEST_USERNAME (default random), CHROMIUM (default
// /usr/bin/chromium), STEP_TIMEOUT_MS (default 15000). Prints one line per step and ends with
// "browser: N passed, M failed" (the runner, launch and virtual authenticator are in harness.mjs).

import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { BASE_URL, STEP_MS, check, openContext, runBrowserTest, step, testUsername, waitFor, waitForError } from './harness.mjs';

const ADMIN = testUsername('admin');
const TARGET = 'lost-phone-user';
const REASON = 'phone lost';
const TOKENS_KEY = 'passgate.tokens';
const ENROLMENT_CODE = /^[a-z2-9]{5}-[a-z2-9]{5}$/;

for (const name of ['PASSGATE_BIN', 'DATABASE_URL']) {
  if (!process.env[name]) {
    console.error(`${name} is required (see the head of admin.mjs)`);
    process.exit(2);
  }
}

// ---------------------------------------------------------------- page helpers

async function storedClaims(page) {
  const tokens = await page.evaluate((key) => JSON.parse(sessionStorage.getItem(key)), TOKENS_KEY);
  check(tokens?.access_token, `sessionStorage ${TOKENS_KEY} holds no access token`);
  return JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url').toString());
}

// Waits until the page is idle (no request of run() in flight).
const idle = (page) => page.waitForFunction(() => document.body.getAttribute('aria-busy') === 'false');

// Runs fn with the authenticator answering, and switches it off afterwards (see harness.mjs
// openContext); the tab must be in front for a ceremony.
async function withPresence(page, presence, fn) {
  await page.bringToFront();
  await presence(true);
  try {
    return await fn();
  } finally {
    await presence(false);
  }
}

async function waitSignedInOnIndex(page, username) {
  const shown = await waitFor(page, () => !document.getElementById('signed-in').hidden
    && document.getElementById('me-username').textContent);
  check(shown === username, `#me-username is "${shown}", expected "${username}"`);
}

// Registers on / as fallback.mjs does: presence only once the page's autofill request (if any)
// has reached the browser, so that the authenticator answers the registration.
async function registerOnIndex(page, presence, username) {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#username').waitFor({ state: 'visible' });
  await page.fill('#username', username);
  await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && ['pending', 'off'].includes(document.body.dataset.autofill));
  await page.waitForTimeout(250);
  await withPresence(page, presence, async () => {
    await page.click('#register');
    await waitSignedInOnIndex(page, username);
  });
}

// The rows of a table body as arrays of cell texts.
const rowsOf = (page, tbody) => page.$$eval(`${tbody} tr`, (rows) => rows.map((row) => [...row.cells].map((c) => c.textContent.trim())));

// Opens TARGET from the search results and waits for its detail.
async function openTarget(page) {
  await page.fill('#user-q', 'lost-phone');
  await page.click('#user-search');
  // The earlier results stay until the new ones arrive.
  await idle(page);
  const item = page.locator(`#user-results li[data-username="${TARGET}"] button`);
  await item.waitFor({ state: 'visible' });
  await item.click();
  const shown = await waitFor(page, (name) => !document.getElementById('user-card').hidden
    && document.body.getAttribute('aria-busy') === 'false'
    && document.getElementById('user-username').textContent === name && name, TARGET);
  check(shown === TARGET, `the detail shows "${shown}"`);
}

// ---------------------------------------------------------------- the scenario

// What the admin's context hands to the new device's.
const shared = { enrolmentCode: null, targetId: null, adminSub: null };
let admin = null;

async function adminFlow(browser) {
  admin = await openContext(browser);
  const { page, presence } = admin;

  await step(`register "${ADMIN}" with a passkey on /`, () => registerOnIndex(page, presence, ADMIN));

  await step('/admin leads to /admin.html, which says a signed-in non-admin is not an administrator (forbidden)', async () => {
    await page.goto(`${BASE_URL}/admin`);
    check(page.url() === `${BASE_URL}/admin.html`, `/admin led to ${page.url()}`);
    await page.waitForFunction(() => document.body.dataset.view === 'signin'
      && document.body.getAttribute('aria-busy') === 'false');
    const state = await page.textContent('#admin-signin-state');
    const code = await page.getAttribute('#message', 'data-code');
    check(state.includes(ADMIN) && code === 'forbidden', `#admin-signin-state: ${state} [${code}]`);
    check(!(await page.locator('#admin-console').isVisible()), '#admin-console shown to a non-admin');
    check(await page.locator('#admin-login').isVisible(), '#admin-login not offered');
  });

  await step(`passgate admin grant ${ADMIN} (the CLI, on the server's database)`, async () => {
    const stdout = execFileSync(process.env.PASSGATE_BIN, ['admin', 'grant', ADMIN], {
      env: { ...process.env, PASSGATE__DATABASE__URL: process.env.DATABASE_URL },
      encoding: 'utf8',
      timeout: STEP_MS,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = stdout.split('\n').map((line) => line.trim());
    check(lines.includes(`${ADMIN}: roles [admin]`), `the CLI printed: ${stdout}`);
  });

  await step('sign in with the passkey on /admin.html (#admin-login)', async () => {
    await withPresence(page, presence, async () => {
      await page.click('#admin-login');
      const name = await waitFor(page, () => document.body.dataset.view === 'console'
        && document.body.getAttribute('aria-busy') === 'false'
        && document.getElementById('admin-username').textContent);
      check(name === ADMIN, `#admin-username is "${name}"`);
    });
    const claims = await storedClaims(page);
    check(claims.roles?.includes('admin'), `the access token's roles are ${JSON.stringify(claims.roles)}`);
    shared.adminSub = claims.sub;
  });

  await step(`search "lost-phone" and open ${TARGET}: one device, one session`, async () => {
    await openTarget(page);
    shared.targetId = (await page.textContent('#user-id')).trim();
    check(/^[0-9a-f-]{36}$/.test(shared.targetId), `#user-id is "${shared.targetId}"`);
    const devices = await rowsOf(page, '#user-devices');
    const sessions = await rowsOf(page, '#user-sessions');
    check(devices.length === 1, `${devices.length} devices listed: ${JSON.stringify(devices)}`);
    check(sessions.length === 1, `${sessions.length} sessions listed: ${JSON.stringify(sessions)}`);
    check((await page.textContent('#user-factors')).includes('passkey'), 'factors lack passkey');
    check(await page.getAttribute('#user-card', 'data-locked') === 'false', 'the user shows as locked');
  });

  await step('reset devices needs a reason, then a confirmation', async () => {
    await page.fill('#reset-reason', '');
    await page.click('#reset-devices');
    const error = await waitForError(page);
    check(/reason/i.test(error), `#message: ${error}`);
    check(!(await page.locator('#reset-confirm').isVisible()), 'the confirmation shown without a reason');
    await page.fill('#reset-reason', REASON);
    await page.click('#reset-devices');
    await page.locator('#reset-confirm').waitFor({ state: 'visible' });
    const text = await page.textContent('#reset-confirm-text');
    check(text.includes(TARGET) && text.includes('1 passkey') && text.includes('1 session'), `confirmation: ${text}`);
    // Cancelling does nothing.
    await page.click('#reset-confirm-no');
    await page.locator('#reset-confirm').waitFor({ state: 'hidden' });
    check((await rowsOf(page, '#user-devices')).length === 1, 'cancelling the reset changed the devices');
  });

  await step(`reset devices with reason "${REASON}": 1 device and the session revoked, an enrolment code shown`, async () => {
    await page.click('#reset-devices');
    await page.locator('#reset-confirm').waitFor({ state: 'visible' });
    await page.click('#reset-confirm-yes');
    const outcome = await waitFor(page, () => {
      const box = document.getElementById('reset-outcome');
      return !box.hidden && document.body.getAttribute('aria-busy') === 'false' && {
        devices: box.dataset.revokedDevices,
        sessions: box.dataset.revokedSessions,
        counts: document.getElementById('reset-counts').textContent,
        code: document.getElementById('enrolment-code').textContent.trim(),
        codeShown: !document.getElementById('enrolment-code-box').hidden,
        mailed: !document.getElementById('enrolment-sent').hidden,
      };
    });
    check(outcome.devices === '1', `revoked devices ${outcome.devices}`);
    check(Number(outcome.sessions) >= 1, `revoked sessions ${outcome.sessions}`);
    check(/1 device\b/.test(outcome.counts) && /\d+ sessions?\b/.test(outcome.counts), `#reset-counts: ${outcome.counts}`);
    check(outcome.codeShown && !outcome.mailed, 'the enrolment code is not shown (or says it was mailed)');
    check(ENROLMENT_CODE.test(outcome.code), `#enrolment-code is "${outcome.code}"`);
    check(await page.locator('#enrolment-code').isVisible(), '#enrolment-code not visible');
    shared.enrolmentCode = outcome.code;
  });

  await step('the detail now lists no devices and no sessions', async () => {
    check((await rowsOf(page, '#user-devices')).length === 0, 'devices still listed');
    check((await rowsOf(page, '#user-sessions')).length === 0, 'sessions still listed');
    check(await page.locator('#user-no-devices').isVisible(), '#user-no-devices not shown');
    check(await page.locator('#user-no-sessions').isVisible(), '#user-no-sessions not shown');
    check(!(await page.textContent('#user-factors')).includes('passkey'), 'factors still list passkey');
  });

  await step(`lock ${TARGET}`, async () => {
    await page.fill('#action-reason', 'checking with the owner');
    await page.click('#lock-toggle');
    await waitFor(page, () => document.getElementById('user-card').dataset.locked === 'true'
      && document.body.getAttribute('aria-busy') === 'false');
    check((await page.textContent('#lock-toggle')).includes('Unlock'), '#lock-toggle does not offer Unlock');
    check((await page.textContent('#user-locked')).startsWith('Locked'), '#user-locked does not say Locked');
    const badge = page.locator(`#user-results li[data-user-id="${shared.targetId}"] .badge.locked`);
    check(await badge.count() === 1, 'the search result has no locked badge');
  });

  await step(`unlock ${TARGET}`, async () => {
    await page.click('#lock-toggle');
    await waitFor(page, () => document.getElementById('user-card').dataset.locked === 'false'
      && document.body.getAttribute('aria-busy') === 'false');
    check((await page.textContent('#user-locked')) === 'Active', '#user-locked does not say Active');
  });

  await step(`the audit trail of ${TARGET} shows devices_reset by ${ADMIN} with reason "${REASON}"`, async () => {
    await page.click('#user-audit');
    await waitFor(page, () => document.getElementById('audit-card').dataset.loaded === 'true'
      && document.body.getAttribute('aria-busy') === 'false');
    check(await page.inputValue('#audit-user') === shared.targetId, '#audit-user is not the user id');
    const rows = await page.$$eval('#audit-events tr', (trs) => trs.map((tr) => ({
      event: tr.dataset.event,
      outcome: tr.dataset.outcome,
      user: tr.querySelector('[data-field="user"]').dataset.userId,
      actor: tr.querySelector('[data-field="actor"]').dataset.userId,
      actorText: tr.querySelector('[data-field="actor"]').textContent,
      reason: tr.querySelector('[data-field="reason"]').textContent,
    })));
    check(rows.length > 0, 'no audit rows shown');
    check(rows.every((row) => row.user === shared.targetId), 'rows of other users shown');
    const reset = rows.find((row) => row.event === 'devices_reset');
    check(reset, `no devices_reset row among ${JSON.stringify(rows.map((row) => row.event))}`);
    check(reset.actor === shared.adminSub, `devices_reset actor is ${reset.actor}, the admin is ${shared.adminSub}`);
    check(reset.actorText === ADMIN, `the actor shows as "${reset.actorText}"`);
    check(reset.reason === REASON, `the reason shows as "${reset.reason}"`);
    check(reset.outcome === 'success', `outcome ${reset.outcome}`);
    // Newest first: the unlock came after the lock, which came after the reset.
    const order = rows.map((row) => row.event);
    const [enabled, disabled, resetAt] = ['account_enabled', 'account_disabled', 'devices_reset'].map((e) => order.indexOf(e));
    check(enabled >= 0 && disabled > enabled && resetAt > disabled, `events not newest first: ${JSON.stringify(order)}`);
  });

  await step('Export CSV downloads the header and a devices_reset line', async () => {
    await page.click('#audit-export');
    const link = page.locator('#audit-download');
    await link.waitFor({ state: 'visible' });
    check((await page.getAttribute('#audit-download', 'href')).startsWith('blob:'), '#audit-download is not a blob: link');
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    check(download.suggestedFilename().endsWith('.csv'), `downloaded as ${download.suggestedFilename()}`);
    const text = await readFile(await download.path(), 'utf8');
    const lines = text.split(/\r?\n/);
    check(lines[0].startsWith('event_id,occurred_at,event,'), `the first line is "${lines[0]}"`);
    const reset = lines.find((line) => line.split(',')[2] === 'devices_reset');
    check(reset, `no devices_reset line in:\n${text.slice(0, 500)}`);
    check(reset.includes(shared.adminSub) && reset.includes(REASON), `devices_reset line: ${reset}`);
  });
}

async function newDeviceFlow(browser) {
  const { context, page, presence, credentials } = await openContext(browser);

  await step('/ links to /enrol.html (#enrol-link)', async () => {
    await page.goto(`${BASE_URL}/`);
    await page.click('#enrol-link');
    await page.waitForURL(`${BASE_URL}/enrol.html`);
    await page.locator('#enrol-form').waitFor({ state: 'visible' });
  });

  await step(`bind a new passkey for ${TARGET} with the enrolment code`, async () => {
    check(shared.enrolmentCode, 'no enrolment code from the admin page');
    await page.fill('#enrol-username', TARGET);
    await page.fill('#enrol-code', shared.enrolmentCode);
    await page.fill('#enrol-device-name', 'Replacement phone');
    await withPresence(page, presence, async () => {
      await page.click('#enrol-submit');
      const name = await waitFor(page, () => document.body.dataset.view === 'done'
        && document.getElementById('done-username').textContent);
      check(name === TARGET, `#done-username is "${name}"`);
    });
    const creds = await credentials();
    check(creds.length === 1 && creds[0].isResidentCredential, `the authenticator holds ${creds.length} credential(s)`);
    const claims = await storedClaims(page);
    check(claims.sub === shared.targetId, `signed in as ${claims.sub}, expected ${shared.targetId}`);
  });

  await step(`/ shows ${TARGET} signed in`, async () => {
    await page.click('#enrol-home');
    await page.waitForURL(`${BASE_URL}/`);
    await waitSignedInOnIndex(page, TARGET);
  });

  await step('the same code again shows invalid_code', async () => {
    await page.goto(`${BASE_URL}/enrol.html`);
    await page.fill('#enrol-username', TARGET);
    await page.fill('#enrol-code', shared.enrolmentCode);
    await page.click('#enrol-submit');
    const error = await waitForError(page);
    check(error.includes('invalid_code'), `#message: ${error}`);
    check(await page.evaluate(() => document.body.dataset.view) === 'form', 'left the form');
    check((await credentials()).length === 1, 'a second passkey was made');
  });

  await context.close();
}

// Back on the admin page: the new device is listed, and unbinding it works.
async function unbindFlow() {
  const { page } = admin;

  await step(`the admin sees ${TARGET}'s new device and unbinds it`, async () => {
    await page.bringToFront();
    await openTarget(page);
    const devices = await rowsOf(page, '#user-devices');
    check(devices.length === 1 && devices[0][0] === 'Replacement phone', `devices: ${JSON.stringify(devices)}`);
    check((await rowsOf(page, '#user-sessions')).length === 1, 'the enrolment session is not listed');
    page.once('dialog', (dialog) => dialog.accept());
    await page.fill('#action-reason', 'test of unbinding');
    await page.click('#user-devices button[data-device-id]');
    await waitFor(page, () => document.getElementById('user-devices').children.length === 0
      && document.body.getAttribute('aria-busy') === 'false');
    check((await rowsOf(page, '#user-sessions')).length === 0, 'the session the device began is still listed');
  });

  await admin.context.close();
}

// ---------------------------------------------------------------- main

await runBrowserTest({
  intro: `browser test of the admin console and enrolment against ${BASE_URL} as "${ADMIN}"`,
  flows: [adminFlow, newDeviceFlow, unbindFlow],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    view: document.body.dataset.view,
    busy: document.body.getAttribute('aria-busy'),
    session: sessionStorage.getItem('passgate.tokens') ? 'yes' : 'no',
  }),
  maxSteps: 20,
});
