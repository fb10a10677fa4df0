// Browser test for the trusted browsers card on /security.html (issue 20 item 5): registers a
// user with a passkey on /, trusts this browser on /security.html (offered after the passkey
// sign-in), sees it listed as this browser with an HttpOnly __Host- cookie that no script can
// read, still listed after a reload (the browser sends the cookie back), and removes it, which
// clears the cookie; in headless Chromium against a running server.
//   cd tests/browser && npm ci && BASE_URL=http://localhost:PORT node trusted.mjs
// Env: as harness.mjs, and SCREENSHOTS (folder for the screenshots, default /tmp).

import { join } from 'node:path';
import {
  BASE_URL, STEP_MS, check, openContext, runBrowserTest, step, testUsername,
  alertOrMessageError, waitFor as waitOnPage,
} from './harness.mjs';

const USERNAME = testUsername('trust');
const COOKIE = '__Host-passgate-trusted';
const SCREENSHOTS = process.env.SCREENSHOTS || '/tmp';

// A card's alert counts as the page's error here, as well as the status line's.
const waitFor = (page, ready, arg = null) => waitOnPage(page, ready, arg, alertOrMessageError);

async function shot(page, name) {
  const path = join(SCREENSHOTS, `trusted-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`     screenshot ${path}`);
}

const trustCookie = async (context) => (await context.cookies(BASE_URL)).find((c) => c.name === COOKIE);

// The trusted card is loaded and no action runs.
const cardReady = () => !document.getElementById('trusted-card').hidden
  && document.getElementById('trusted-list').children.length > 0
  && document.body.getAttribute('aria-busy') === 'false';

const listed = (page) => page.$$eval('#trusted-list li.session', (items) => items.map((li) => ({
  id: li.dataset.trustedDeviceId,
  current: li.dataset.current === 'true',
  text: li.textContent,
})));

async function flow(browser) {
  const { context, page, presence } = await openContext(browser);

  await step(`register "${USERNAME}" with a passkey on /`, async () => {
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
  });

  await step('/security.html offers to trust this browser after the passkey sign-in', async () => {
    await page.goto(`${BASE_URL}/security.html`);
    await waitFor(page, cardReady);
    check(await page.locator('#trusted-add').isVisible(), '"Trust this browser" is not offered');
    check(await page.locator('#trusted-note').isHidden(), 'a note shows after a passkey sign-in');
    const empty = await page.textContent('#trusted-list');
    check(empty.includes('No trusted browsers'), `list: ${empty}`);
    check(!(await trustCookie(context)), 'a trusted cookie before trusting');
  });

  let trustedId;
  await step('trust this browser: listed as this browser, with an HttpOnly __Host- cookie', async () => {
    await page.click('#trusted-add');
    await waitFor(page, () => document.querySelector('#trusted-list li[data-current="true"]')
      && document.body.getAttribute('aria-busy') === 'false');
    const items = await listed(page);
    check(items.length === 1 && items[0].current, `listed ${JSON.stringify(items)}`);
    check(items[0].text.includes('This browser') && items[0].text.includes('Chrome'), `item: ${items[0].text}`);
    trustedId = items[0].id;
    const status = await page.textContent('#message');
    check(status.includes('This browser is trusted until'), `#message: ${status}`);
    check(await page.locator('#trusted-add').isHidden(), '"Trust this browser" still offered');
    const cookie = await trustCookie(context);
    check(cookie, 'no trusted cookie in the browser');
    check(cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict' && cookie.path === '/',
      `cookie attributes ${JSON.stringify({ ...cookie, value: '(hidden)' })}`);
    check(cookie.value.length === 43, 'the cookie does not hold a 256-bit token');
    check(!(await page.evaluate(() => document.cookie)).includes(COOKIE), 'a script can read the cookie');
    await page.locator('#trusted-card').scrollIntoViewIfNeeded();
    await shot(page, 'listed');
  });

  await step('after a reload the browser sends its cookie and is still this browser', async () => {
    await page.reload();
    await waitFor(page, cardReady);
    const items = await listed(page);
    check(items.length === 1 && items[0].id === trustedId && items[0].current, `listed ${JSON.stringify(items)}`);
  });

  await step('remove it: the list is empty, the cookie is gone, and trusting is offered again', async () => {
    await page.click(`#trusted-list li[data-trusted-device-id="${trustedId}"] .trusted-remove`);
    await waitFor(page, () => document.querySelectorAll('#trusted-list li.session').length === 0
      && document.body.getAttribute('aria-busy') === 'false');
    check((await page.textContent('#message')).includes('This browser is no longer trusted'), `#message: ${await page.textContent('#message')}`);
    check(!(await trustCookie(context)), 'the trusted cookie is still in the browser');
    check(await page.locator('#trusted-add').isVisible(), '"Trust this browser" not offered again');
    await shot(page, 'removed');
  });

  await context.close();
}

await runBrowserTest({
  intro: `browser test of the trusted browsers card against ${BASE_URL} as "${USERNAME}"`,
  flows: [flow],
  messageSelector: '#message',
  pageState: () => ({
    url: location.href,
    busy: document.body.getAttribute('aria-busy'),
    alerts: [...document.querySelectorAll('[role="alert"]')].map((a) => a.textContent),
    trusted: [...document.querySelectorAll('#trusted-list li')].map((li) => li.textContent),
  }),
  maxSteps: 5,
});
