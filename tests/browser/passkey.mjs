// Browser test for passgate's page (static/): drives passkey registration and sign-in in headless
// Chromium with a CDP virtual authenticator, against a running server.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT node passkey.mjs
// Env: BASE_URL (required), TEST_USERNAME (default random), CHROMIUM (default /usr/bin/chromium),
// STEP_TIMEOUT_MS (default 15000). Prints one line per step and ends with "browser: N passed, M failed"
// (the runner, launch and virtual authenticator are in harness.mjs).

import { BASE_URL, STEP_MS, check, openContext, openFallbackContext, runBrowserTest, step, testUsername } from './harness.mjs';

const USERNAME = testUsername('pw');

// ---------------------------------------------------------------- page helpers

// Waits until the signed-in card shows, or fails at once if the page reports an error.
async function waitSignedIn(page, username) {
  const handle = await page.waitForFunction(() => {
    const message = document.getElementById('message');
    if (message.classList.contains('error')) return { error: message.textContent };
    const card = document.getElementById('signed-in');
    const shown = !card.hidden && getComputedStyle(card).display !== 'none';
    const name = document.getElementById('me-username').textContent;
    return shown && name ? { username: name, claims: document.getElementById('claims').textContent } : false;
  }, null, { timeout: STEP_MS });
  const state = await handle.jsonValue();
  check(!state.error, `page reported: ${state.error}`);
  check(state.username === username, `#me-username is "${state.username}", expected "${username}"`);
  check(await page.locator('#signed-in').isVisible(), '#signed-in not visible');
  let claims;
  try {
    claims = JSON.parse(state.claims);
  } catch {
    throw new Error(`#claims is not JSON: ${state.claims.slice(0, 200)}`);
  }
  check(typeof claims.sub === 'string' && claims.sub, '#claims has no "sub"');
  check('amr' in claims, '#claims has no "amr"');
  return claims;
}

async function waitSignedOut(page) {
  await page.locator('#signed-in').waitFor({ state: 'hidden', timeout: STEP_MS });
  await page.locator('#username').waitFor({ state: 'visible', timeout: STEP_MS });
  const stored = await page.evaluate(() => sessionStorage.length);
  check(stored === 0, `sessionStorage still holds ${stored} item(s) after sign-out`);
}

async function signOut(page) {
  await page.click('#logout');
  await waitSignedOut(page);
}

// Standard base64 (what WebAuthn.getCredentials returns) to base64url.
const toB64url = (b64) => b64.replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

// Runs fn with the authenticator answering (see openContext), and switches it back off
// afterwards; the explicit buttons must abort the page's pending autofill request. First waits
// until the page is idle and its autofill request (if any) has reached the browser: switched
// on earlier, the authenticator would answer that request instead of the one the step starts.
async function withPresence(page, presence, fn) {
  const idle = await page.waitForFunction(() => document.body.getAttribute('aria-busy') !== 'true'
    && document.body.dataset.autofill !== 'starting' && document.body.dataset.autofill);
  const autofillState = await idle.jsonValue();
  if (autofillState === 'pending') await page.waitForTimeout(250);
  await presence(true);
  try {
    return await fn(autofillState);
  } finally {
    await presence(false);
  }
}

// ---------------------------------------------------------------- the scenario

async function mainFlow(browser) {
  const { context, page, presence, credentials } = await openContext(browser);
  let userId;
  let credentialId;

  await step(`open ${BASE_URL}/`, async () => {
    await page.goto(`${BASE_URL}/`);
    await page.locator('#username').waitFor({ state: 'visible' });
    check(!(await page.locator('#signed-in').isVisible()), '#signed-in visible before signing in');
    const autocomplete = await page.getAttribute('#username', 'autocomplete');
    check(/\bwebauthn\b/.test(autocomplete || ''), `#username autocomplete is "${autocomplete}"`);
  });

  await step(`register "${USERNAME}" (#register)`, async () => {
    await page.fill('#username', USERNAME);
    await page.fill('#display-name', 'Browser Test');
    const claims = await withPresence(page, presence, async () => {
      await page.click('#register');
      return waitSignedIn(page, USERNAME);
    });
    userId = claims.sub;
  });

  await step('virtual authenticator holds one resident passkey', async () => {
    const creds = await credentials();
    check(creds.length === 1, `expected 1 credential, found ${creds.length}`);
    const [cred] = creds;
    check(cred.isResidentCredential, 'credential is not resident (discoverable)');
    check(cred.rpId === 'localhost', `rpId is ${cred.rpId}`);
    credentialId = toB64url(cred.credentialId);
  });

  await step('recovery codes are offered once after registration and start an enrolment', async () => {
    await page.locator('#recovery-offer').waitFor({ state: 'visible' });
    const focused = await page.evaluate(() => document.activeElement?.id);
    check(focused === 'recovery-offer-title', `focus is on #${focused}, not the offer`);
    await page.click('#recovery-offer-make');
    await page.locator('#recovery-offer-shown').waitFor({ state: 'visible' });
    const codes = await page.$$eval('#recovery-offer-codes li', (items) => items.map((li) => li.textContent.trim()));
    check(codes.length === 10 && codes.every((c) => /^[a-z2-9]{5}-[a-z2-9]{5}$/.test(c)), `codes ${JSON.stringify(codes)}`);
    await page.waitForFunction(() => /\bpasskey_recovery_code\b/.test(document.getElementById('me-factors').dataset.factors));
    // A code starts an enrolment (nothing is spent until a passkey is bound).
    const status = await page.evaluate(async ([username, code]) => {
      const response = await fetch('/v1/enrol/start', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, code }),
      });
      return response.status;
    }, [USERNAME, codes[0]]);
    check(status === 200, `enrol/start with a recovery code answered ${status}`);
    await page.click('#recovery-offer-done');
    check(!(await page.locator('#recovery-offer').isVisible()), 'the offer stays after "I have saved them"');
    check((await page.$$('#recovery-offer-codes li')).length === 0, 'the codes stay in the page');
  });

  await step('reload keeps the session', async () => {
    await page.reload();
    const claims = await waitSignedIn(page, USERNAME);
    check(claims.sub === userId, `sub changed from ${userId} to ${claims.sub}`);
  });

  await step('sign out (#logout)', () => signOut(page));

  await step('username-first sign-in (#login)', async () => {
    await page.fill('#username', USERNAME);
    const claims = await withPresence(page, presence, async (autofill) => {
      // The point of this step: the click must first cancel the page's pending autofill request.
      check(autofill === 'pending', `expected a pending autofill request before the click, page has "${autofill}"`);
      await page.click('#login');
      return waitSignedIn(page, USERNAME);
    });
    check(claims.sub === userId, `signed in as ${claims.sub}, registered as ${userId}`);
  });

  await step('sign out', () => signOut(page));

  await step('discoverable sign-in without a username (#login-discoverable)', async () => {
    await page.fill('#username', '');
    const claims = await withPresence(page, presence, async (autofill) => {
      check(autofill === 'pending', `expected a pending autofill request before the click, page has "${autofill}"`);
      await page.click('#login-discoverable');
      return waitSignedIn(page, USERNAME);
    });
    check(claims.sub === userId, `signed in as ${claims.sub}, registered as ${userId}`);
  });

  await step('sign out', () => signOut(page));

  await step('passkey autofill (conditional UI) signs in on load', async () => {
    const available = await page.evaluate(() => PublicKeyCredential.isConditionalMediationAvailable?.() ?? false);
    check(available, 'isConditionalMediationAvailable() is not true in this browser');
    const claims = await withPresence(page, presence, async () => {
      await page.reload();
      return waitSignedIn(page, USERNAME);
    });
    check(claims.sub === userId, `signed in as ${claims.sub}, registered as ${userId}`);
  });

  await step('sign out', () => signOut(page));

  await step('registering the same username again shows username_taken', async () => {
    await page.fill('#username', USERNAME);
    await page.click('#register');
    await page.waitForFunction(() => document.getElementById('message').dataset.code === 'username_taken');
    check(!(await page.locator('#signed-in').isVisible()), 'signed in after a failed registration');
    const creds = await credentials();
    check(creds.length === 1 && toB64url(creds[0].credentialId) === credentialId, 'the authenticator gained a credential');
  });
  await context.close();
}

async function fallbackFlow(browser) {
  const { username, context, page, presence } = await openFallbackContext(browser, USERNAME);
  let userId;

  await step(`fallback without L3 JSON helpers: register "${username}"`, async () => {
    await page.goto(`${BASE_URL}/`);
    check(await page.evaluate(() => !PublicKeyCredential.parseCreationOptionsFromJSON), 'helpers not removed');
    await page.fill('#username', username);
    const claims = await withPresence(page, presence, async () => {
      await page.click('#register');
      return waitSignedIn(page, username);
    });
    userId = claims.sub;
  });

  await step('fallback: sign out', () => signOut(page));

  await step('fallback: username-first sign-in', async () => {
    await page.fill('#username', username);
    const claims = await withPresence(page, presence, async () => {
      await page.click('#login');
      return waitSignedIn(page, username);
    });
    check(claims.sub === userId, `signed in as ${claims.sub}, registered as ${userId}`);
  });

  await step('fallback: sign out', () => signOut(page));

  await step('fallback: discoverable sign-in', async () => {
    const claims = await withPresence(page, presence, async () => {
      await page.click('#login-discoverable');
      return waitSignedIn(page, username);
    });
    check(claims.sub === userId, `signed in as ${claims.sub}, registered as ${userId}`);
  });

  await step('fallback: sign out', () => signOut(page));
  await context.close();
}

// ---------------------------------------------------------------- the page shell

// Every page gets its masthead, back link and status line from /page.js: one of each, in
// place, and no page left with markup of its own.
const SHELLS = [
  ['/', 'passgate', false, 'message'],
  ['/enrol.html', 'passgate', true, 'message'],
  ['/fallback.html', 'passgate', true, 'message'],
  ['/pay.html', 'passgate', true, 'pay-message'],
  ['/security.html', 'passgate', true, 'message'],
  ['/admin.html', 'passgate admin', true, 'message'],
];

async function shellFlow(browser) {
  const { context, page } = await openContext(browser);
  await step('every page has the shared shell', async () => {
    for (const [path, title, hasBack, statusId] of SHELLS) {
      await page.goto(`${BASE_URL}${path}`);
      await page.locator('main > header.masthead').waitFor({ state: 'attached' });
      const shell = await page.evaluate(() => {
        const main = document.querySelector('main');
        // An error turns the line's role from status to alert.
        const status = document.querySelectorAll('[data-status-line]');
        return {
          headers: document.querySelectorAll('header.masthead').length,
          first: main.firstElementChild.matches('header.masthead'),
          title: main.querySelector('h1')?.textContent,
          tagline: main.querySelector('.masthead .tagline')?.textContent,
          backs: main.querySelectorAll(':scope > .back').length,
          statuses: status.length,
          statusId: status[0]?.id,
          statusRole: status[0]?.getAttribute('role'),
          statusLast: main.lastElementChild === status[0],
        };
      });
      const where = `${path}: ${JSON.stringify(shell)}`;
      check(shell.headers === 1 && shell.first && shell.title === title && shell.tagline, `masthead on ${where}`);
      check(shell.backs === (hasBack ? 1 : 0), `back link on ${where}`);
      check(shell.statuses === 1 && shell.statusId === statusId && shell.statusLast
        && ['status', 'alert'].includes(shell.statusRole), `status line on ${where}`);
    }
  });
  await context.close();
}

// ---------------------------------------------------------------- main

await runBrowserTest({
  intro: `browser test against ${BASE_URL} as "${USERNAME}"`,
  flows: [mainFlow, fallbackFlow, shellFlow],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    signedIn: !document.getElementById('signed-in')?.hidden,
    username: document.getElementById('me-username')?.textContent,
    autofill: document.body.dataset.autofill,
  }),
  maxSteps: 30,
});
