// Browser test for passgate's pay page (static/pay.html): registers a user on /, then approves
// payments with the passkey (step-up) in headless Chromium with a CDP virtual authenticator,
// and checks that the payment API (examples/payment_api.rs) accepts each one.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT PAYMENT_API=http://127.0.0.1:PORT2/payments node pay.mjs
// Env: BASE_URL (required), PAYMENT_API (default http://localhost:8090/payments), TEST_USERNAME
// (default random), CHROMIUM (default /usr/bin/chromium), STEP_TIMEOUT_MS (default 15000).
// Prints one line per step and ends with "browser: N passed, M failed".

import { createHash, randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const STEP_MS = Number(process.env.STEP_TIMEOUT_MS || 15000);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const USERNAME = process.env.TEST_USERNAME || `pay-${randomBytes(5).toString('hex')}`;
const PAYMENT_API = process.env.PAYMENT_API || 'http://localhost:8090/payments';
// Flags measured to work as root, offline, in a container (as in passkey.mjs).
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-proxy-server',
];

function baseUrl() {
  if (!process.env.BASE_URL) {
    console.error('BASE_URL is required, e.g. BASE_URL=http://localhost:8080 node pay.mjs');
    process.exit(2);
  }
  const url = new URL(process.env.BASE_URL);
  // An IP address cannot be a WebAuthn RP id, and http:// is a secure context only on localhost.
  if (['127.0.0.1', '[::1]'].includes(url.hostname)) {
    console.log(`note: opening ${url.hostname} as localhost (an IP address cannot be an RP id)`);
    url.hostname = 'localhost';
  }
  return url.origin;
}

const BASE_URL = baseUrl();

// ---------------------------------------------------------------- step runner

let passed = 0;
let failed = 0;
let currentPage = null;
const pageErrors = [];

class StepFailed extends Error {}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function pageState(page) {
  try {
    return JSON.stringify(await withTimeout(page.evaluate(() => ({
      url: location.href,
      payState: document.body.dataset.payState,
      message: (document.getElementById('pay-message') || document.getElementById('message'))?.textContent,
      result: document.getElementById('pay-result')?.textContent?.slice(0, 300),
    })), 2000, 'page state'));
  } catch {
    return '(page not readable)';
  }
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await withTimeout(fn(), STEP_MS, name);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err.message.split('\n')[0]}`);
    if (currentPage) console.log(`     page state: ${await pageState(currentPage)}`);
    for (const line of pageErrors.slice(-5)) console.log(`     page: ${line}`);
    throw new StepFailed(name);
  }
  passed++;
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

function check(condition, what) {
  if (!condition) throw new Error(what);
}

// ---------------------------------------------------------------- helpers

// What passgate puts in the txn claim, computed here independently of the page and server.
function expectedTxn(transaction) {
  const sorted = Object.fromEntries(Object.keys(transaction).sort().map((k) => [k, transaction[k]]));
  return createHash('sha256').update(JSON.stringify(sorted)).digest('base64url');
}

async function openContext(browser, { withoutJsonHelpers = false } = {}) {
  const context = await browser.newContext();
  if (withoutJsonHelpers) {
    // Exercise the page's fallback for browsers without the WebAuthn L3 JSON helpers.
    await context.addInitScript(() => {
      delete PublicKeyCredential.parseCreationOptionsFromJSON;
      delete PublicKeyCredential.parseRequestOptionsFromJSON;
      delete PublicKeyCredential.prototype.toJSON;
    });
  }
  const page = await context.newPage();
  // A ceremony in a tab that is not in front fails with NotAllowedError.
  await page.bringToFront();
  page.setDefaultTimeout(STEP_MS);
  page.on('pageerror', (err) => pageErrors.push(`uncaught ${err.message}`));
  page.on('console', (msg) => { if (msg.type() === 'error') pageErrors.push(`console.error ${msg.text()}`); });
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: false,
    },
  });
  // The authenticator answers only while a step wants it to: on / the page keeps a passkey
  // autofill request pending while signed out, which must not be answered by accident.
  const presence = (enabled) => cdp.send('WebAuthn.setAutomaticPresenceSimulation', { authenticatorId, enabled });
  currentPage = page;
  return { context, page, presence };
}

// Registers on / (as passkey.mjs does) and returns the user id from the access token.
async function register(page, presence, username) {
  await page.goto(`${BASE_URL}/`);
  await page.locator('#username').waitFor({ state: 'visible' });
  await page.fill('#username', username);
  // Wait until the page's autofill request has reached the browser, so the authenticator
  // answers the registration rather than that.
  await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && ['pending', 'off'].includes(document.body.dataset.autofill));
  await page.waitForTimeout(250);
  await presence(true);
  try {
    await page.click('#register');
    const handle = await page.waitForFunction(() => {
      const message = document.getElementById('message');
      if (message.classList.contains('error')) return { error: message.textContent };
      const name = document.getElementById('me-username').textContent;
      return !document.getElementById('signed-in').hidden && name ? { claims: document.getElementById('claims').textContent } : false;
    });
    const state = await handle.jsonValue();
    check(!state.error, `registration failed: ${state.error}`);
    return JSON.parse(state.claims).sub;
  } finally {
    await presence(false);
  }
}

async function openPayPage(page) {
  await page.goto(`${BASE_URL}/pay.html?api=${encodeURIComponent(PAYMENT_API)}`);
  await page.locator('#pay-card').waitFor({ state: 'visible' });
  const api = await page.inputValue('#payment-api');
  check(api === PAYMENT_API, `#payment-api is "${api}", expected the ?api= value "${PAYMENT_API}"`);
}

// Fills the form, approves with the passkey, and returns { claims, result } once the page is done.
async function pay(page, presence, transaction) {
  await page.fill('#amount', transaction.amount);
  await page.fill('#currency', transaction.currency);
  await page.fill('#payee', transaction.payee);
  await page.fill('#reference', transaction.reference ?? '');
  await presence(true);
  let state;
  try {
    await page.click('#pay');
    const handle = await page.waitForFunction(() => {
      const s = document.body.dataset.payState;
      if (s !== 'done' && s !== 'error') return false;
      return {
        state: s,
        message: document.getElementById('pay-message').textContent,
        claims: document.getElementById('pay-claims').textContent,
        result: document.getElementById('pay-result').textContent,
      };
    });
    state = await handle.jsonValue();
  } finally {
    await presence(false);
  }
  check(state.state === 'done', `the page reported: ${state.message}`);
  let claims;
  let result;
  try { claims = JSON.parse(state.claims); } catch { throw new Error(`#pay-claims is not JSON: ${state.claims.slice(0, 200)}`); }
  try { result = JSON.parse(state.result); } catch { throw new Error(`#pay-result is not JSON: ${state.result.slice(0, 200)}`); }
  return { claims, result, message: state.message };
}

function checkApproved({ claims, result }, transaction, userId) {
  check(claims.scope === 'payment:authorize', `scope is ${JSON.stringify(claims.scope)}`);
  check(typeof claims.txn === 'string' && claims.txn.length === 43, `txn is ${JSON.stringify(claims.txn)}`);
  check(claims.txn === expectedTxn(transaction), `txn ${claims.txn} is not the SHA-256 of the entered transaction`);
  check(claims.aud === 'payments', `aud is ${JSON.stringify(claims.aud)}`);
  check(claims.sub === userId, `sub is ${claims.sub}, registered as ${userId}`);
  check(claims.exp - claims.iat <= 120, `the token lives ${claims.exp - claims.iat} s`);
  check(result.accepted === true, `#pay-result: ${JSON.stringify(result)}`);
  check(result.txn === claims.txn, `the payment API accepted txn ${result.txn}, the token has ${claims.txn}`);
  check(result.sub === userId, `the payment API accepted it for ${result.sub}`);
}

// ---------------------------------------------------------------- the scenario

const COFFEE = { amount: '12.50', currency: 'EUR', payee: 'Coffee Shop' };
const BOOKS = { amount: '4.20', currency: 'EUR', payee: 'Book Shop', reference: 'order 7' };

async function mainFlow(browser) {
  const { context, page, presence } = await openContext(browser);
  let userId;
  let firstTxn;

  await step(`register "${USERNAME}" on /`, async () => {
    userId = await register(page, presence, USERNAME);
  });

  await step(`open /pay.html?api=${PAYMENT_API}`, () => openPayPage(page));

  await step('pay 12.50 EUR to "Coffee Shop": claims shown, payment accepted', async () => {
    const paid = await pay(page, presence, COFFEE);
    checkApproved(paid, COFFEE, userId);
    check(/accepted/i.test(paid.message), `#pay-message is "${paid.message}"`);
    firstTxn = paid.claims.txn;
  });

  await step('pay 4.20 EUR to "Book Shop" with a reference: a second, different txn', async () => {
    const paid = await pay(page, presence, BOOKS);
    checkApproved(paid, BOOKS, userId);
    check(paid.claims.txn !== firstTxn, 'the second payment has the first one\'s txn');
  });

  await step('a payment the server refuses shows its problem', async () => {
    await page.fill('#amount', '-5');
    await page.click('#pay');
    await page.waitForFunction(() => document.body.dataset.payState === 'error');
    const message = await page.textContent('#pay-message');
    check(message.includes('validation_failed'), `#pay-message is "${message}"`);
    check((await page.textContent('#pay-result')) === '', '#pay-result not cleared');
  });
  await context.close();
}

async function signedOutFlow(browser) {
  const { context, page } = await openContext(browser);
  await step('signed out, /pay.html says so and links to /', async () => {
    await page.goto(`${BASE_URL}/pay.html`);
    await page.locator('#pay-signed-out').waitFor({ state: 'visible' });
    check(!(await page.locator('#pay-card').isVisible()), '#pay-card visible while signed out');
    check(await page.locator('#pay-signed-out a[href="/"]').count() === 1, 'no link to /');
  });
  await context.close();
}

async function fallbackFlow(browser) {
  const username = `${USERNAME}-fb`.slice(0, 64);
  const { context, page, presence } = await openContext(browser, { withoutJsonHelpers: true });
  let userId;
  await step(`fallback without L3 JSON helpers: register "${username}"`, async () => {
    userId = await register(page, presence, username);
  });
  await step('fallback: pay 12.50 EUR to "Coffee Shop"', async () => {
    await openPayPage(page);
    check(await page.evaluate(() => !PublicKeyCredential.parseRequestOptionsFromJSON), 'helpers not removed');
    checkApproved(await pay(page, presence, COFFEE), COFFEE, userId);
  });
  await context.close();
}

// ---------------------------------------------------------------- main

// Last resort if the browser itself hangs on close.
const watchdog = setTimeout(() => {
  console.log('FAIL watchdog: the run hung');
  console.log(`browser: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, STEP_MS * 20 + 60_000);
watchdog.unref();

let browser;
try {
  console.log(`pay page test against ${BASE_URL} and ${PAYMENT_API} as "${USERNAME}"`);
  browser = await withTimeout(
    chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true }),
    STEP_MS * 2,
    `launch ${CHROMIUM}`,
  );
  await mainFlow(browser);
  await signedOutFlow(browser);
  await fallbackFlow(browser);
} catch (err) {
  if (!(err instanceof StepFailed)) {
    failed++;
    console.log(`FAIL setup: ${err.message.split('\n')[0]}`);
  }
} finally {
  if (browser) await withTimeout(browser.close(), 10_000, 'browser.close').catch(() => {});
}

console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
