// Loads deja's /dashboard in Debian's headless Chromium (driven by playwright-core), waits for
// the charts to draw, sends one more chat and waits for the live refresh to show it, then prints
// what the page drew as JSON. Usage: node dashboard.mjs BASE_URL ADMIN_KEY API_KEY SCREENSHOT
import { chromium } from 'playwright-core';

const [base, adminKey, apiKey, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const out = { errors: [], requestsOutside: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } });
  page.on('pageerror', (e) => out.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') out.errors.push(m.text()); });
  page.on('request', (r) => { if (!r.url().startsWith(base)) out.requestsOutside.push(r.url()); });

  await page.goto(`${base}/dashboard?refresh=1#key=${adminKey}`);
  await page.waitForFunction(() => Number(document.body.dataset.refreshes) >= 1, null, { timeout: 15000 });
  const read = () => page.evaluate(() => [...document.querySelectorAll('section.route')].map((s) => ({
    route: s.dataset.route,
    kpis: Object.fromEntries([...s.querySelectorAll('dd')].map((d) => [d.dataset.kpi, d.textContent])),
    charts: Object.fromEntries([...s.querySelectorAll('canvas')].map((c) => {
      // Pixels of exactly each data colour (legend swatches are 10x10 = 100 of them each).
      const colours = { hit: [63, 185, 80], sem: [88, 166, 255], miss: [240, 136, 62],
        err: [248, 81, 73], retry: [210, 168, 255], threshold: [242, 204, 96] };
      const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const inked = Object.fromEntries(Object.keys(colours).map((k) => [k, 0]));
      for (let i = 0; i < data.length; i += 4) {
        for (const [k, [r, g, b]] of Object.entries(colours)) {
          if (data[i] === r && data[i + 1] === g && data[i + 2] === b && data[i + 3] === 255) inked[k]++;
        }
      }
      return [c.dataset.chart, { points: Number(c.dataset.points), inked, threshold: c.dataset.threshold }];
    })),
  })));
  out.first = await read();
  out.keyLeftInUrl = page.url().includes(adminKey);

  // The request log view: every row's cache column, then only semantic hits, then one opened.
  await page.waitForFunction(() => Number(document.body.dataset.logRows) > 0, null, { timeout: 15000 });
  const column = (i) => page.evaluate((i) =>
    [...document.querySelectorAll('#log tr.row')].map((tr) => tr.cells[i].textContent), i);
  out.log = { cache: await column(4), status: await column(3), target: await column(10) };
  await page.selectOption('#f-cache', 'SEMANTIC HIT');
  await page.waitForFunction(() => [...document.querySelectorAll('#log tr.row')]
    .every((tr) => tr.cells[4].textContent === 'SEMANTIC HIT'), null, { timeout: 15000 });
  out.log.semantic = await column(4);
  out.log.similarity = await column(5);
  await page.click('#log tr.row');
  await page.waitForSelector('#log tr.bodies', { timeout: 15000 });
  out.log.opened = await page.textContent('#log tr.bodies');
  await page.selectOption('#f-cache', '');

  // Live: one more request shows up without a reload.
  const count = (text) => Number(String(text).replaceAll(',', ''));
  const before = out.first.reduce((n, r) => n + count(r.kpis.requests), 0);
  const res = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: JSON.stringify({ model: 'yi-lightning', messages: [{ role: 'user', content: 'one more, live' }] }),
  });
  out.liveStatus = res.status;
  await page.waitForFunction(
    (n) => [...document.querySelectorAll('dd[data-kpi="requests"]')]
      .reduce((sum, d) => sum + Number(d.textContent.replaceAll(',', '')), 0) > n,
    before, { timeout: 15000 },
  );
  out.after = await read();
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (e) {
  out.errors.push(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
