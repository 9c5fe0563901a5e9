// The run viewer in a real browser: generate two reports with the debug binary (a bugged run
// that breaks invariants, and a passing one), open each index.html from disk in headless
// Chromium, drive the viewer with real clicks and key presses, and after every step compare
// what the page shows with what this script works out on its own from history.jsonl. The
// page's numbers are never trusted: the step it claims to be on must be the step this script
// expects, and the phone it draws must be the phone the history implies at that step.
'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const ROOT = path.resolve(__dirname, '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// The viewer shows at most this many bubbles a chat (the latest), as viewer.js says.
const BUBBLES_MAX = 60;
// The history events the viewer steps through (viewer.rs's kind_of, plus faults and the heal).
const STEP_KINDS = new Set(['Sent', 'Acked', 'Displayed', 'DuplicateDropped', 'Ticks', 'Read',
  'Presence', 'Opened', 'Connected', 'Disconnected', 'GapDetected', 'Woken']);
const TICKS = ['pending', 'sent', 'delivered', 'read'];

let checks = 0;
function check(cond, what) {
  checks += 1;
  if (!cond) { throw new Error('viewer test: ' + what); }
}
function same(got, want, what) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  check(g === w, what + '\n  page shows: ' + g + '\n  history says: ' + w);
}

// CHATSIM_BIN (set by sim/chatsim/tests/viewer.rs to the binary cargo test built) or cargo run.
function chatsim(args, want) {
  const bin = process.env.CHATSIM_BIN;
  const [cmd, pre] = bin ? [bin, []] : ['cargo', ['run', '-q', '-p', 'chatsim', '--']];
  const r = spawnSync(cmd, [...pre, ...args],
    { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== want) {
    throw new Error(`viewer test: chatsim ${args.join(' ')} exited ${r.status}, want ${want}\n${r.stderr}`);
  }
}

// ---- The model: history.jsonl read on its own terms ----

function devName(d) { return `u${d.user}.d${d.index}`; }
function msgName(id) { return `${devName(id.device)}#${id.n}`; }
function convName(c) {
  // Conversation ids are 64-bit: read as text, so no digit is lost to a double.
  const v = BigInt(c);
  const group = 1n << 63n;
  if (v & group) { return `g${v & 0xffffffffn}`; }
  return `c(u${v >> 32n},u${v & 0xffffffffn})`;
}
function text(body) { return Buffer.from(body).toString('utf8'); }

function loadHistory(dir) {
  const lines = fs.readFileSync(path.join(dir, 'history.jsonl'), 'utf8').split('\n').filter(Boolean);
  const records = lines.map((l) => JSON.parse(l.replace(/"conv":(\d+)/g, '"conv":"$1"')));
  const steps = [];
  records.forEach((r, i) => {
    const e = r.event;
    if (e === 'Healed' || e.Fault) { steps.push(i); return; }
    const kind = Object.keys(e.Device.obs)[0];
    if (typeof e.Device.obs === 'string' ? STEP_KINDS.has(e.Device.obs) : STEP_KINDS.has(kind)) {
      steps.push(i);
    }
  });
  return { records, steps };
}

function obsOf(r) {
  if (!r.event.Device) { return null; }
  const o = r.event.Device.obs;
  if (typeof o === 'string') { return { kind: o, v: {}, dev: devName(r.event.Device.device), d: r.event.Device.device }; }
  const kind = Object.keys(o)[0];
  return { kind, v: o[kind], dev: devName(r.event.Device.device), d: r.event.Device.device };
}

// What `device`'s screen showed after history line `upto`: chats most recent first, each with
// its bubbles (id, text, tick on this device's own texts) and the peer's presence.
function phoneModel(h, device, upto) {
  const chats = new Map();
  const level = new Map();
  const presence = new Map();
  let conn = 'unknown';
  const me = device.split('.')[0];
  for (let i = 0; i <= upto; i++) {
    const o = obsOf(h.records[i]);
    if (!o || o.dev !== device) { continue; }
    const v = o.v;
    const chat = (c) => {
      const name = convName(c);
      if (!chats.has(name)) { chats.set(name, { conv: name, bubbles: [], last: -1 }); }
      return chats.get(name);
    };
    switch (o.kind) {
      case 'Sent':
        chat(v.conv).bubbles.push({ id: msgName(v.id), text: text(v.body) });
        chat(v.conv).last = i;
        if (!level.has(msgName(v.id))) { level.set(msgName(v.id), 0); }
        break;
      case 'Displayed':
        chat(v.conv).bubbles.push({ id: msgName(v.id), text: text(v.body) });
        chat(v.conv).last = i;
        break;
      case 'Acked': level.set(msgName(v.id), Math.max(level.get(msgName(v.id)) || 0, 1)); break;
      case 'Ticks': level.set(msgName(v.id), Math.max(level.get(msgName(v.id)) || 0, v.tick === 'Read' ? 3 : 2)); break;
      case 'Presence': presence.set(`u${v.user}`, v.online ? 'online' : 'last-seen'); break;
      case 'Connected': conn = 'connected'; break;
      case 'Disconnected': conn = 'disconnected'; break;
      default: break;
    }
  }
  const list = [...chats.values()].sort((a, b) => b.last - a.last);
  return {
    conn,
    chats: list.map((c) => {
      const m = /^c\((u\d+),(u\d+)\)$/.exec(c.conv);
      const peer = m ? (m[1] === me ? m[2] : m[1]) : null;
      return {
        conv: c.conv,
        presence: peer ? (presence.get(peer) || 'unknown') : null,
        bubbles: c.bubbles.slice(-BUBBLES_MAX).map((b) => [b.id, b.text,
          b.id.startsWith(device + '#') ? TICKS[level.get(b.id) || 0] : null]),
      };
    }),
  };
}

// The phone-side hops of message `id` the history shows: (time, kind, device), in order.
function deviceHops(h, id) {
  const out = [];
  let conv = null, seq = null;
  const readBy = new Set();
  h.records.forEach((r) => {
    const o = obsOf(r);
    if (!o) { return; }
    const v = o.v;
    if (v.id && msgName(v.id) === id) {
      if (seq === null && v.seq !== undefined) { seq = v.seq; conv = v.conv; }
      if (conv === null && v.conv !== undefined) { conv = v.conv; }
      const kind = { Sent: 'send', Acked: 'acked', Displayed: 'display', DuplicateDropped: 'duplicate',
        Ticks: v.tick === 'Read' ? 'read-ticks' : 'delivered' }[o.kind];
      if (kind) { out.push([r.t, kind, o.dev]); }
    } else if (o.kind === 'Read' && seq !== null && v.conv === conv && v.upto >= seq && !readBy.has(o.dev)) {
      readBy.add(o.dev);
      out.push([r.t, 'read', o.dev]);
    }
  });
  return out;
}

// ---- The page ----

async function pageState(page) {
  return page.evaluate(() => {
    const now = document.getElementById('v-now');
    const head = document.getElementById('v-phone-head');
    return {
      k: +now.getAttribute('data-k'),
      t: +now.getAttribute('data-t'),
      hist: +now.getAttribute('data-hist'),
      device: head.getAttribute('data-device'),
      conn: head.getAttribute('data-conn'),
      chats: [...document.querySelectorAll('#v-phone .v-chat')].map((s) => {
        const p = s.querySelector('.v-presence');
        return {
          conv: s.getAttribute('data-conv'),
          presence: p ? p.getAttribute('data-presence') : null,
          bubbles: [...s.querySelectorAll('.v-bubble')].map((b) => {
            const tick = b.querySelector('.v-tick');
            const txt = b.textContent.slice(0, b.textContent.length - (tick ? tick.textContent.length : 0));
            return [b.getAttribute('data-msg'), txt, b.getAttribute('data-tick')];
          }),
        };
      }),
    };
  });
}

// The page must be on step `k` of the history's steps, and its phone must be the model's.
async function expectStep(page, h, k, what) {
  const s = await pageState(page);
  const hist = h.steps[k];
  same([s.k, s.hist, s.t], [k, hist, h.records[hist].t], `${what}: the step (k, history line, time)`);
  const want = phoneModel(h, s.device, hist);
  same(s.conn, want.conn, `${what}: ${s.device}'s connection`);
  same(s.chats, want.chats, `${what}: ${s.device}'s chats at ${h.records[hist].t} ms (history line ${hist})`);
  return s;
}

// The last step at or before time t.
function stepAt(h, t) {
  let k = 0;
  h.steps.forEach((i, j) => { if (h.records[i].t <= t) { k = j; } });
  return k;
}

async function press(page, key, times = 1, shift = false) {
  for (let i = 0; i < times; i++) {
    if (shift) { await page.keyboard.down('Shift'); }
    await page.keyboard.press(key);
    if (shift) { await page.keyboard.up('Shift'); }
  }
}

async function clickDevice(page, name) {
  await page.click(`#v-devices .v-dev[data-dev="${name}"]`);
  const pressed = await page.$eval(`#v-devices .v-dev[data-dev="${name}"]`, (b) => b.getAttribute('aria-pressed'));
  same(pressed, 'true', `device button ${name} is pressed after a click`);
}

// Click a message in the list; its hops must be in time order and hold exactly the phone-side
// steps the history shows for it, plus frames from the servers.
async function checkHops(page, h, id) {
  await page.$eval(`#v-msglist .v-msg[data-msg="${id}"]`, (b) => b.scrollIntoView());
  await page.click(`#v-msglist .v-msg[data-msg="${id}"]`);
  const hops = await page.$$eval('#v-hops .v-hop', (ls) => ls.map((l) => [+l.getAttribute('data-t'), l.getAttribute('data-kind'), l.getAttribute('data-at')]));
  same(await page.$eval('#v-hops', (o) => o.getAttribute('data-msg')), id, 'the hop list follows the clicked message');
  for (let i = 1; i < hops.length; i++) {
    check(hops[i - 1][0] <= hops[i][0], `hops of ${id} out of time order: ${JSON.stringify(hops)}`);
  }
  const phoneSide = new Set(['send', 'acked', 'display', 'duplicate', 'delivered', 'read-ticks', 'read']);
  const want = deviceHops(h, id).sort((a, b) => a[0] - b[0]);
  const got = hops.filter((x) => phoneSide.has(x[1]));
  // The page lists a message's first hops only; when it cut some, what it lists must be the
  // start of what the history says.
  const cut = await page.$$eval('#v-hops .v-none', (l) => l.length > 0);
  same(got, cut ? want.slice(0, got.length) : want, `phone-side hops of ${id}`);
  const servers = hops.filter((x) => !phoneSide.has(x[1])).map((x) => x[1]);
  check(servers.includes('shard') && servers.includes('gateway'), `hops of ${id} include the gateway and the shard: ${servers}`);
  return hops;
}

async function open(browser, dir) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.setViewport({ width: 1300, height: 1000 });
  await page.goto('file://' + path.join(dir, 'index.html'), { waitUntil: 'load' });
  await page.waitForSelector('#viewer[data-ready="1"]', { timeout: 10000 });
  same(await page.$eval('body', (b) => b.getAttribute('data-check')), 'ok', 'the page marks data-check="ok"');
  await page.$eval('#viewer', (v) => v.scrollIntoView());
  return { page, errors };
}

async function failingRun(browser, dir) {
  const h = loadHistory(dir);
  const run = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8'));
  const viols = run.invariants.flatMap((v) => v.violations);
  check(viols.length > 0, 'the bugged run has violations');
  const { page, errors } = await open(browser, dir);
  const n = await page.$eval('#v-scrub', (s) => +s.max + 1);
  same(n, h.steps.length, 'the scrubber has one position per history step');

  let k = 0;
  await expectStep(page, h, k, 'on load');

  // The page lists violations by time; click the first one's button (a real click).
  const first = viols.filter((v) => v.at !== null).sort((a, b) => a.at - b.at)[0];
  const btn = `#v-violations .v-viol[data-t="${first.at}"][data-msg="${first.message}"]`;
  await page.click(btn);
  k = stepAt(h, first.at);
  let s = await expectStep(page, h, k, `after clicking the ${first.invariant} violation`);
  same(s.device, first.device, 'a violation shows its device');
  check(s.t <= first.at && (k + 1 >= h.steps.length || h.records[h.steps[k + 1]].t > first.at),
    `the clicked violation's moment ${first.at} ms is the page's time ${s.t} ms`);
  same(await page.$eval('#v-hops', (o) => o.getAttribute('data-msg')), first.message, 'a violation shows its message\'s hops');

  // Real key presses: one step at a time, then back, then ten.
  for (let i = 0; i < 4; i++) { await press(page, 'ArrowRight'); k += 1; await expectStep(page, h, k, `ArrowRight #${i + 1}`); }
  for (let i = 0; i < 2; i++) { await press(page, 'ArrowLeft'); k -= 1; await expectStep(page, h, k, `ArrowLeft #${i + 1}`); }
  await press(page, 'ArrowRight', 1, true); k += 10; await expectStep(page, h, k, 'Shift+ArrowRight');

  // The sender's phone at this moment, then the message's way.
  const sender = first.message.split('#')[0];
  await clickDevice(page, sender);
  await expectStep(page, h, k, `after picking ${sender}`);
  await checkHops(page, h, first.message);
  await page.click('#v-next'); k += 1; await expectStep(page, h, k, 'the ▶ button');
  await page.click('#v-prev'); k -= 1; await expectStep(page, h, k, 'the ◀ button');

  await press(page, 'End'); k = h.steps.length - 1; await expectStep(page, h, k, 'End');
  await press(page, 'ArrowLeft', 3); k -= 3; await expectStep(page, h, k, 'End, then ArrowLeft x3');
  await press(page, 'Home'); k = 0; await expectStep(page, h, k, 'Home');

  // A fault band on the timeline: clicking one goes to its start, a time a fault record has.
  const faultTimes = new Set(h.records.filter((r) => r.event.Fault).map((r) => r.t));
  const band = await page.$('.v-fault');
  const box = await band.boundingBox();
  const cx = box.x + box.width / 2, cy = box.y + box.height / 2;
  const hit = await page.evaluate((x, y) => {
    const e = document.elementFromPoint(x, y);
    return e && e.getAttribute('data-from');
  }, cx, cy);
  check(hit !== null && faultTimes.has(+hit), `the timeline's fault band starts at a fault's time (${hit})`);
  await page.mouse.click(cx, cy);
  k = stepAt(h, +hit);
  await expectStep(page, h, k, `after clicking the fault band from ${hit} ms`);

  // The scrubber itself: a click on its middle lands near the middle step, and whatever step
  // it lands on, the page must show that step's state.
  const sb = await (await page.$('#v-scrub')).boundingBox();
  await page.mouse.click(sb.x + sb.width / 2, sb.y + sb.height / 2);
  s = await pageState(page);
  check(Math.abs(s.k - (h.steps.length - 1) / 2) <= h.steps.length * 0.05, `a click mid-scrubber lands mid-run (step ${s.k} of ${h.steps.length})`);
  k = s.k;
  await expectStep(page, h, k, 'after clicking the scrubber');
  await press(page, 'ArrowRight'); k += 1; await expectStep(page, h, k, 'ArrowRight with the scrubber focused');

  // The lost message's recipient, at the end: it never showed it.
  await clickDevice(page, first.device);
  await press(page, 'End'); k = h.steps.length - 1;
  s = await expectStep(page, h, k, `End on ${first.device}`);
  check(!s.chats.some((c) => c.bubbles.some((b) => b[0] === first.message)) || first.invariant !== 'no_loss',
    `${first.device} never shows the lost ${first.message}`);

  // Back to the violation for the screenshot: the moment a reader wants to see.
  await page.$eval('#viewer', (v) => v.scrollIntoView());
  await page.click(btn);
  k = stepAt(h, first.at);
  await expectStep(page, h, k, `after clicking the ${first.invariant} violation again`);
  await (await page.$('#viewer')).screenshot({ path: path.join(path.dirname(dir), 'viewer.png') });
  same(errors, [], 'no script error on the page');
  await page.close();
}

async function passingRun(browser, dir) {
  const h = loadHistory(dir);
  const { page, errors } = await open(browser, dir);
  same(await page.$$eval('#v-violations .v-viol', (b) => b.length), 0, 'a passing run lists no violation');
  let k = 0;
  await expectStep(page, h, k, 'passing run, on load');
  // The device that sent the most texts.
  const sent = new Map();
  h.records.forEach((r) => { const o = obsOf(r); if (o && o.kind === 'Sent') { sent.set(o.dev, (sent.get(o.dev) || 0) + 1); } });
  const busiest = [...sent.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0][0];
  await clickDevice(page, busiest);
  await expectStep(page, h, k, `passing run, ${busiest} picked`);
  // Walk to the busiest device's first send with key presses, checking every step.
  const firstSend = h.steps.findIndex((i) => { const o = obsOf(h.records[i]); return o && o.kind === 'Sent' && o.dev === busiest; });
  while (k < firstSend + 3) { await press(page, 'ArrowRight'); k += 1; await expectStep(page, h, k, `passing run, step ${k}`); }
  await press(page, 'End'); k = h.steps.length - 1;
  const s = await expectStep(page, h, k, 'passing run, End');
  check(s.chats.length > 0, `${busiest} shows chats at the end`);
  const firstMsg = s.chats[s.chats.length - 1].bubbles.find((b) => b[2] !== null);
  if (firstMsg) { await checkHops(page, h, firstMsg[0]); }
  same(errors, [], 'no script error on the passing run\'s page');
  await page.close();
}

// Presence as each phone was told it: walk to just after a device learned a peer's presence,
// with key presses only, and check the chat header says what the history says.
async function presenceRun(browser, dir) {
  const h = loadHistory(dir);
  const { page, errors } = await open(browser, dir);
  let k = 0;
  await expectStep(page, h, k, 'presence run, on load');
  // The first presence a device was told about a peer it has a chat with, some way in.
  let target = null;
  for (let j = 0; j < h.steps.length && target === null; j++) {
    const o = obsOf(h.records[h.steps[j]]);
    if (o && o.kind === 'Presence') {
      const want = phoneModel(h, o.dev, h.steps[j]);
      if (want.chats.some((c) => c.presence !== 'unknown' && c.presence !== null)) { target = [j, o.dev]; }
    }
  }
  check(target !== null, 'the presence run tells some phone about a peer it chats with');
  await clickDevice(page, target[1]);
  await page.focus('#v-scrub');
  await press(page, 'ArrowRight', Math.floor(target[0] / 10), true);
  await press(page, 'ArrowRight', target[0] % 10);
  k = target[0];
  const s = await expectStep(page, h, k, `presence run, ${target[1]} just told a presence`);
  check(s.chats.some((c) => c.presence === 'online' || c.presence === 'last-seen'), 'a chat header shows the peer online or last seen');
  await press(page, 'ArrowLeft'); k -= 1;
  await expectStep(page, h, k, 'presence run, one step before');
  same(errors, [], 'no script error on the presence run\'s page');
  await page.close();
}

async function main() {
  const started = Date.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'viewer-test-'));
  const bad = path.join(tmp, 'bugged');
  const good = path.join(tmp, 'passing');
  chatsim(['run', 'scenarios/shard-crash-after-persist.toml', '--seed', '1', '--bug', 'ack-before-persist', '--report', bad], 1);
  chatsim(['run', 'scenarios/smoke.toml', '--seed', '3', '--report', good], 0);
  const groups = path.join(tmp, 'groups');
  chatsim(['run', 'scenarios/groups.toml', '--seed', '2', '--report', groups], 0);
  const presence = path.join(tmp, 'presence');
  chatsim(['run', 'scenarios/presence.toml', '--seed', '2', '--report', presence], 0);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: path.join(tmp, 'profile'),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    await failingRun(browser, bad);
    await passingRun(browser, good);
    await passingRun(browser, groups);
    await presenceRun(browser, presence);
  } finally {
    await browser.close();
  }
  console.log(`viewer test: ${checks} checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshot ${path.join(tmp, 'viewer.png')}`);
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
