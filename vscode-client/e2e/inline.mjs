// End-to-end check of the extension in a real VS Code (code-server) driven by headless Chromium:
// wait for the model, type a function header in a Python file, wait for Eyas' ghost text, accept it
// with Tab, save, ask the extension for the server's counters (Eyas: Show Status), and turn
// completions off with a click on the status bar item.
//
//   node e2e/inline.mjs --url http://127.0.0.1:PORT --folder /abs/workspace --file add.py --out DIR
//
// code-server is started (and stopped) by the caller, tests/test_vscode_e2e.py. Prints progress on
// stderr and one `E2E_RESULT {json}` line on stdout; exits 1 with a screenshot on any failure.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: opt } = parseArgs({
  options: {
    url: { type: 'string' },
    folder: { type: 'string' },
    file: { type: 'string', default: 'add.py' },
    out: { type: 'string' },
    header: { type: 'string', default: 'def add(a, b):' },
    chromium: { type: 'string', default: process.env.CHROMIUM ?? '/usr/bin/chromium' },
    'ready-timeout': { type: 'string', default: '180' },   // seconds: workbench + server + model on a busy CPU
  },
});
for (const key of ['url', 'folder', 'out']) {
  if (!opt[key]) throw new Error(`--${key} is required`);
}

const t0 = Date.now();
const say = (...parts) => console.error(`[e2e ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...parts);
const STATUS_ITEM = '[id="eyas.eyas.eyas.status"]';   // publisher.name.itemId
const GHOST = '.monaco-editor .ghost-text, .monaco-editor .ghost-text-decoration';

const browser = await chromium.launch({ executablePath: opt.chromium, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
const shot = (name) => page.screenshot({ path: join(opt.out, name) });

try {
  await page.goto(`${opt.url}/?folder=${encodeURIComponent(opt.folder)}`);
  await page.waitForSelector('.monaco-workbench', { timeout: 60_000 });
  say('workbench up');

  // The status bar item says "<model> · <engine>" once eyas/status reports "ready"; until then it
  // spins. That also proves the extension found and started the server.
  const statusItem = page.locator(STATUS_ITEM);
  await statusItem.filter({ hasText: '·' }).waitFor({ timeout: Number(opt['ready-timeout']) * 1000 });
  const statusBarReady = (await statusItem.textContent()).trim();
  say(`model ready, status bar: ${statusBarReady}`);

  await openFile(opt.file);
  await page.locator('.monaco-editor .view-lines').first().click();
  await page.keyboard.type(opt.header);
  await page.keyboard.press('Enter');
  say('typed the header');

  const ghost = await waitForGhostText();
  say(`ghost text: ${JSON.stringify(ghost)}`);
  await shot('vscode-inline.png');

  await page.keyboard.press('Tab');
  await page.keyboard.press('Escape');   // drop whatever VS Code suggests next, so the buffer stays put
  const before = readFileSync(join(opt.folder, opt.file), 'utf8');
  await page.keyboard.press('Control+S');
  const saved = await savedText(before);
  say(`saved: ${JSON.stringify(saved.slice(0, 120))}`);

  const status = await acceptedStatus();
  say(`status: ${status}`);
  await shot('vscode-accepted.png');
  const statusBarAfter = (await statusItem.textContent()).trim();

  // a click on the status bar item turns completions off (eyas.toggle writes eyas.enable)
  await statusItem.click();
  await statusItem.filter({ hasText: 'Eyas off' }).waitFor({ timeout: 15_000 });
  const statusBarOff = (await statusItem.textContent()).trim();
  say(`after a click: ${statusBarOff}`);
  const result = { statusBarReady, statusBarAfter, statusBarOff, ghost, saved, status, seconds: (Date.now() - t0) / 1000 };
  console.log(`E2E_RESULT ${JSON.stringify(result)}`);
} catch (error) {
  await shot('vscode-failure.png').catch(() => {});
  console.error(`[e2e] FAILED: ${error.stack ?? error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}

/** Open a quick pick with `key`, type `text`, wait for a matching row, Enter. */
async function pick(key, text) {
  await page.keyboard.press(key);
  await page.locator('.quick-input-widget input').waitFor();
  await page.keyboard.type(text);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: text }).first().waitFor();
  await page.keyboard.press('Enter');
}

/** Quick Open (Ctrl+P), the file name, Enter; then wait for its editor tab. */
async function openFile(name) {
  await pick('Control+P', name);
  await page.locator('.tab.active', { hasText: name }).waitFor({ timeout: 20_000 });
  say(`opened ${name}`);
}

/** The ghost text as shown (a multi-line suggestion is spread over several view lines). VS Code
 * asks for it by itself after typing; if it has not shown up after a while, trigger it by hand
 * (editor.action.inlineSuggest.trigger, Alt+\), as a user would. */
async function waitForGhostText() {
  for (let attempt = 0; attempt < 4; attempt++) {
    if (attempt > 0) {
      say('no ghost text yet: editor.action.inlineSuggest.trigger');
      await page.keyboard.press('Alt+Backslash');
    }
    try {
      await page.waitForFunction((selector) => Array.from(document.querySelectorAll(selector))
        .some((e) => e.textContent.trim().length > 0), GHOST, { timeout: 10_000 });
    } catch {
      continue;
    }
    await page.waitForTimeout(300);   // let every line of a multi-line suggestion render
    return page.$$eval(GHOST, (els) => els.map((e) => e.textContent).join(''));
  }
  throw new Error('no ghost text appeared');
}

/** The file once the save has reached the disk (the tab's dirty mark goes first). */
async function savedText(before) {
  for (let i = 0; i < 100; i++) {
    const text = readFileSync(join(opt.folder, opt.file), 'utf8');
    const dirty = await page.locator('.tab.active.dirty').count();
    if (text !== before && dirty === 0) return text;
    await page.waitForTimeout(100);
  }
  throw new Error('the file was not saved');
}

/** Runs "Eyas: Show Status" until its notification counts the accept: the accept reaches the
 * server as workspace/executeCommand (eyas.accepted), asynchronously after the Tab. */
async function acceptedStatus() {
  let message = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    if (attempt > 0) {
      await runCommand('Notifications: Clear All Notifications');   // so the next toast is the new one
      await page.waitForTimeout(1000);
    }
    await runCommand('Eyas: Show Status');
    const toast = page.locator('.notification-toast .notification-list-item-message', { hasText: 'served' }).first();
    await toast.waitFor({ timeout: 10_000 });
    message = await toast.innerText();
    if (/accepted [1-9]/.test(message)) return message;
  }
  return message;
}

/** The command palette (F1), the command's title, Enter. */
async function runCommand(title) {
  await pick('F1', title);
}
