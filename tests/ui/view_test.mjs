// Browser test of stepsnapd's HTTP view: Debian's chromium, headless, driven
// by playwright-core (tests/ui/node_modules, installed by scripts/setup).
// Run by agent_view_vm_test after a real pipeline run:
//
//   node view_test.mjs BASE_URL SCREENSHOT_DIR PIPELINE RUN STEP SCRIPT_SNAPSHOT
//
// It clicks its way through as a person would and asserts on visible text.
// Exit 0 when every check held; otherwise the first failure, one line.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, shots, pipeline, run, step, scriptSnapshot] = process.argv.slice(2);
if (!scriptSnapshot) {
  console.error('usage: node view_test.mjs BASE_URL SCREENSHOT_DIR PIPELINE RUN STEP SCRIPT_SNAPSHOT');
  process.exit(2);
}

function check(cond, what) {
  if (!cond) throw new Error(what);
  console.log('ok: ' + what);
}

const profile = mkdtempSync(join(tmpdir(), 'stepsnap-chromium-'));
// A fresh profile each run (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  timeout: 300000,
  viewport: { width: 1200, height: 900 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage'],
});
let failed = false;
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.setDefaultTimeout(120000);

  // The runs list, then into the run.
  await page.goto(base + '/');
  check(await page.getByRole('heading', { name: 'Pipelines and runs' }).isVisible(), 'runs list shown');
  check((await page.locator('#runs').innerText()).includes(pipeline), `runs list names ${pipeline}`);
  await page.screenshot({ path: join(shots, 'runs.png'), fullPage: true });
  await page.getByRole('link', { name: run, exact: true }).click();
  await page.waitForURL(`**/runs/${pipeline}/${run}`);
  const title = await page.locator('h1').innerText();
  check(title === `Run ${run} of pipeline ${pipeline}`, `run page heading "${title}"`);
  check(await page.locator('svg.graph').isVisible(), 'step graph drawn');
  check(await page.locator('svg.graph line.edge').count() >= 1, 'graph has arrows');
  const restore = await page.locator('#restore').innerText();
  check(restore.includes(`--restore ${run} --from-step ${step}`), 'restore command for the step');
  await page.screenshot({ path: join(shots, 'run.png'), fullPage: true });

  // The step's post-snapshot, then its parent through the lineage.
  const row = page.locator(`#step-${step}`);
  const post = row.locator('td').nth(6).locator('a').first();
  const postName = await post.innerText();
  await post.click();
  await page.waitForURL(`**/snapshots/${postName}`);
  check((await page.locator('h1').innerText()) === `Snapshot ${postName}`, `snapshot page of ${postName}`);
  const fields = await page.locator('#fields').innerText();
  for (const f of ['pipeline', 'run', 'step', 'phase', 'command', 'exit status', 'thin id', 'lineage'])
    check(fields.includes(f), `snapshot page shows ${f}`);
  check(fields.includes('post'), 'phase post shown');
  await page.screenshot({ path: join(shots, 'snapshot.png'), fullPage: true });
  const parent = page.locator('#lineage a').first();
  const parentName = await parent.innerText();
  await parent.click();
  await page.waitForURL(`**/snapshots/${parentName}`);
  check((await page.locator('#fields').innerText()).includes('pre'), `lineage leads to ${parentName}, a pre-snapshot`);

  // A label holding a script is shown as text and never runs.
  await page.goto(base + '/snapshots/' + scriptSnapshot);
  const labels = await page.locator('#labels').innerText();
  check(labels.includes('<script>window.pwned=1</script>'), 'the <script> label is shown as text');
  check(await page.evaluate(() => window.pwned === undefined), 'the <script> label did not run');

  // Unknown names are 404 pages saying what was looked for.
  const r404 = await page.goto(base + `/runs/${pipeline}/no-such-run`);
  check(r404.status() === 404, 'unknown run is 404');
  check((await page.locator('#not-found').innerText()).includes(`No run ${pipeline}/no-such-run`), '404 names the run');
  const s404 = await page.goto(base + '/snapshots/no-such-snapshot');
  check(s404.status() === 404, 'unknown snapshot is 404');
  check((await page.locator('#not-found').innerText()).includes('No snapshot no-such-snapshot'), '404 names the snapshot');
  await page.screenshot({ path: join(shots, 'not-found.png') });

  // The pool and the live events.
  await page.goto(base + '/pool');
  check((await page.locator('main').innerText()).includes('data:'), 'pool page shows data use');
  await page.screenshot({ path: join(shots, 'pool.png'), fullPage: true });
  await page.goto(base + '/live');
  await page.waitForFunction(() => document.querySelectorAll('#events li').length > 0);
  check((await page.locator('#status').innerText()) === 'connected', 'live events connected');
  check((await page.locator('#events').innerText()).includes('step.finished'), 'live events listed');
  await page.screenshot({ path: join(shots, 'live.png') });
} catch (e) {
  failed = true;
  console.error('FAILED: ' + e.message.split('\n')[0]);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
