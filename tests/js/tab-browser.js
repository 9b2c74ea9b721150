// Open the test host page (tab-host.html) in Debian's Chromium, let the Provenance tab load in its
// frame, optionally filter, scroll and copy, then screenshot the page and print what the tab shows.
// Usage: node tab-browser.js '{"url": ..., "screenshot": ..., "spki": ..., "userDataDir": ...,
//                              "filter": "text", "scrollToEnd": true, "copy": true}'
'use strict';
const { chromium } = require('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

async function main(config) {
  const context = await chromium.launchPersistentContext(config.userDataDir, {
    executablePath: config.executablePath || '/usr/bin/chromium',
    headless: true,
    args: [...FLAGS, `--ignore-certificate-errors-spki-list=${config.spki}`],
    viewport: { width: 1280, height: config.height || 900 },
    permissions: ['clipboard-read', 'clipboard-write'],
  });
  const report = { consoleErrors: [], dialogs: [] };
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('dialog', (dialog) => { report.dialogs.push(dialog.message()); dialog.dismiss(); });
    page.on('console', (message) => { if (message.type() === 'error') report.consoleErrors.push(message.text()); });
    page.on('pageerror', (error) => report.consoleErrors.push(String(error)));
    await page.goto(config.url);
    await page.waitForFunction(() => window.host && window.host.loaded !== '', null, { timeout: 20000 })
      .catch((error) => { throw new Error(`${error.message}; the page logged: ${JSON.stringify(report.consoleErrors)}`); });
    const frame = page.frame({ url: /\/tab\/tab\.html$/ });
    report.loaded = await page.evaluate(() => window.host.loaded);
    report.calls = await page.evaluate(() => window.host.calls);
    Object.assign(report, await frame.evaluate(() => {
      const fetched = performance.getEntriesByName('provenance-fetched')[0];
      const rendered = performance.getEntriesByName('provenance-rendered')[0];
      return {
        // From the frame's navigation (SDK handshake, listing, fetching, parsing included) to the cards in the page.
        renderedAt: rendered ? rendered.startTime : null,
        renderMs: fetched && rendered ? rendered.startTime - fetched.startTime : null,
        text: document.getElementById('provenance').innerText,
        textContent: document.getElementById('provenance').textContent,
        images: document.querySelectorAll('img').length,
        rows: document.querySelectorAll('.row').length,
        names: [...document.querySelectorAll('.row .name')].map((n) => n.textContent),
        counts: [...document.querySelectorAll('.count')].map((n) => n.textContent),
        badges: [...document.querySelectorAll('.badge')].map((n) => n.textContent),
        links: [...document.querySelectorAll('a')].map((a) => a.href),
        checks: [...document.querySelectorAll('tr.check')].map((r) => [...r.cells].map((c) => c.textContent)),
        background: getComputedStyle(document.body).backgroundColor,
        pwned: Boolean(window.pwned || window.parent.pwned),
      };
    }));
    if (config.scrollToEnd) {
      const started = Date.now();
      await frame.evaluate(() => { const v = document.querySelector('.viewport'); v.scrollTop = v.scrollHeight; });
      await frame.waitForFunction(() => {
        const names = [...document.querySelectorAll('.row .name')];
        return names.length > 0 && document.querySelector('.viewport').scrollTop > 0;
      });
      await frame.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
      report.scrollMs = Date.now() - started;
      report.namesAfterScroll = await frame.evaluate(() => [...document.querySelectorAll('.row .name')].map((n) => n.textContent));
      report.rowsAfterScroll = await frame.evaluate(() => document.querySelectorAll('.row').length);
    }
    if (config.filter !== undefined) {
      await frame.fill('.filter', config.filter);
      await frame.waitForFunction((wanted) => document.querySelector('.count').textContent.includes(wanted), config.filterCount);
      report.filtered = await frame.evaluate(() => ({
        count: document.querySelector('.count').textContent,
        names: [...document.querySelectorAll('.row .name')].map((n) => n.textContent),
      }));
    }
    if (config.copy) {
      await frame.click('.row button.copy');
      await frame.waitForFunction(() => document.querySelector('.row button.copy').textContent !== 'Copy');
      report.copyLabel = await frame.evaluate(() => document.querySelector('.row button.copy').textContent);
      report.clipboard = await frame.evaluate(() => navigator.clipboard.readText());
    }
    await frame.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    report.calls = await page.evaluate(() => window.host.calls);
    await page.screenshot({ path: config.screenshot, fullPage: config.fullPage !== false });
  } finally {
    await context.close();
  }
  return report;
}

main(JSON.parse(process.argv[2])).then(
  (report) => { process.stdout.write(JSON.stringify(report)); },
  (error) => { process.stderr.write(`${error.stack || error}\n`); process.exitCode = 1; },
);
