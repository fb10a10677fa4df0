// Browser test for passgate's pay page (static/pay.html): registers a user on /, then approves
// payments with the passkey (step-up) in headless Chromium with a CDP virtual authenticator,
// and checks that the payment API (examples/payment_api.rs) accepts each one.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT PAYMENT_API=http://127.0.0.1:PORT2/payments node pay.mjs
// Env: BASE_URL (required), PAYMENT_API (default http://localhost:8090/payments), TEST_USERNAME
// (default random), CHROMIUM (default /usr/bin/chromium), STEP_TIMEOUT_MS (default 15000).
// Prints one line per step and ends with "browser: N passed, M failed" (the runner, launch and
// virtual authenticator are in harness.mjs).

import { createHash } from 'node:crypto';
import { BASE_URL, check, openContext, openFallbackContext, runBrowserTest, step, testUsername } from './harness.mjs';

const USERNAME = testUsername('pay');
const PAYMENT_API = process.env.PAYMENT_API || 'http://localhost:8090/payments';

// ---------------------------------------------------------------- helpers

// What passgate puts in the txn claim, computed here independently of the page and server.
function expectedTxn(transaction) {
  const sorted = Object.fromEntries(Object.keys(transaction).sort().map((k) => [k, transaction[k]]));
  return createHash('sha256').update(JSON.stringify(sorted)).digest('base64url');
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
  check(claims.aud === 'payments:authorize', `aud is ${JSON.stringify(claims.aud)}`);
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
    const code = await page.getAttribute('#pay-message', 'data-code');
    check(code === 'validation_failed', `#pay-message is "${message}" [${code}]`);
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
  const { username, context, page, presence } = await openFallbackContext(browser, USERNAME);
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

await runBrowserTest({
  intro: `pay page test against ${BASE_URL} and ${PAYMENT_API} as "${USERNAME}"`,
  flows: [mainFlow, signedOutFlow, fallbackFlow],
  pageState: () => ({
    url: location.href,
    payState: document.body.dataset.payState,
    message: (document.getElementById('pay-message') || document.getElementById('message'))?.textContent,
    result: document.getElementById('pay-result')?.textContent?.slice(0, 300),
  }),
  maxSteps: 20,
});
