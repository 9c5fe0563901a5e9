// The run viewer: replays the events in #viewer-data to show what each phone showed at the
// chosen step. Every state is recomputed from the events up to the step (never stored per
// step), so what the page shows is what the events imply. No network, no libraries.
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('viewer-data').textContent);
  var root = document.getElementById('viewer');
  var ev = D.events;
  var n = ev.length;
  // Bubbles a chat shows at most: the latest ones, like a phone scrolled to the bottom.
  var BUBBLES_MAX = 60;
  var TICKS = ['pending', 'sent', 'delivered', 'read'];
  var GLYPH = { pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓' };
  // How each hop kind reads (the kinds are documented on viewer.rs's Hop).
  var HOP_WORDS = {
    send: 'user presses send', acked: '✓ shown to the sender', display: 'shown on screen',
    duplicate: 'duplicate copy dropped', delivered: '✓✓ shown to the sender',
    'read-ticks': 'read ticks shown to the sender', read: 'read by the user',
    gateway: 'send reaches the gateway', shard: 'shard receives the send',
    persist: 'shard asks storage to persist', stored: 'storage persisted it',
    replicate: 'storage replicates it', 'ack-sent': 'shard sends ✓',
    'ack-phone': '✓ reaches the sender', fanout: 'fan-out step (inbox write)',
    push: 'live delivery', 'push-phone': 'live delivery reaches the device',
    drain: 'inbox drain', 'drain-phone': 'inbox drain reaches the device', fetch: 'gap fetch',
    'device-ack': 'device acks receipt', 'inbox-delete': 'inbox entry deleted', other: 'frame',
    'push-notify': 'push notification for the away device', wake: 'push provider wakes the device',
    woken: 'the app is woken by the push', 'drain-request': 'device asks to drain its inbox'
  };
  var SVGNS = 'http://www.w3.org/2000/svg';
  var k = 0;
  var dev = 0;
  var sel = -1;
  var byName = {};
  D.messages.forEach(function (m, i) { byName[m.id] = i; });

  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (a) { e.setAttribute(a, attrs[a]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function devName(d) { return d === undefined || d === null ? '' : D.devices[d].name; }
  function convName(c) { return c === undefined || c === null ? '' : D.convs[c].name; }

  // The last step at or before time t (the first step when t is before every event).
  function stepAt(t) {
    var lo = 0, hi = n - 1, best = 0;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (ev[mid].t <= t) { best = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return best;
  }

  // What device d's screen showed after events 0..=upto: its chats with their bubbles in the
  // order they appeared, the ticks on its own texts, presence as it was told, its connection.
  function phoneAt(d, upto) {
    var chats = {}, order = [], level = {}, presence = {}, conn = 'unknown', open = null;
    var me = D.devices[d];
    function chat(c) {
      if (!chats[c]) { chats[c] = { c: c, bubbles: [], last: -1 }; order.push(c); }
      return chats[c];
    }
    for (var i = 0; i <= upto && i < n; i++) {
      var e = ev[i];
      if (e.d !== d) { continue; }
      switch (e.k) {
        case 'sent':
          chat(e.c).bubbles.push({ m: e.m, out: true });
          chats[e.c].last = i;
          if (level[e.m] === undefined) { level[e.m] = 0; }
          break;
        case 'displayed':
          var from = D.messages[e.m].from;
          chat(e.c).bubbles.push({ m: e.m, out: from !== null && D.devices[from].user === me.user, path: e.p });
          chats[e.c].last = i;
          break;
        case 'acked':
          level[e.m] = Math.max(level[e.m] || 0, 1);
          break;
        case 'ticks':
          level[e.m] = Math.max(level[e.m] || 0, e.p === 'read' ? 3 : 2);
          break;
        case 'presence':
          presence[e.u] = { on: e.on, ls: e.ls, t: e.t };
          break;
        case 'connected': conn = 'connected'; break;
        case 'disconnected': conn = 'disconnected'; break;
        case 'opened': open = e.c === undefined ? null : e.c; break;
      }
    }
    var list = order.map(function (c) { return chats[c]; });
    // Most recent chat first, as a chat list is sorted.
    list.sort(function (a, b) { return b.last - a.last; });
    return { chats: list, level: level, presence: presence, conn: conn, open: open };
  }

  function presenceText(p) {
    if (!p) { return ['unknown', 'no presence yet']; }
    return p.on ? ['online', 'online'] : ['last-seen', 'last seen at ' + p.ls + ' ms'];
  }

  function describe(e) {
    var m = e.m === undefined ? null : D.messages[e.m];
    var who = devName(e.d);
    switch (e.k) {
      case 'sent': return who + ' sends ' + m.id + ' in ' + convName(e.c) + ': "' + m.text + '"';
      case 'acked': return who + ' shows ✓ on ' + m.id + ' (seq ' + e.s + ')';
      case 'displayed': return who + ' shows ' + m.id + ' (seq ' + e.s + ', via ' + e.p + ')';
      case 'duplicate': return who + ' drops a copy of ' + m.id + ' (via ' + e.p + ')';
      case 'ticks': return who + ' shows ' + (e.p === 'read' ? 'read ticks' : '✓✓') + ' on ' + m.id;
      case 'read': return who + "'s user reads " + convName(e.c) + ' up to seq ' + e.s;
      case 'presence': return who + ' is told ' + e.u + ' is ' + (e.on ? 'online' : 'last seen at ' + e.ls + ' ms');
      case 'opened': return who + (e.c === undefined ? ' closes its chat' : ' opens ' + convName(e.c));
      case 'connected': return who + ' connects';
      case 'disconnected': return who + ' disconnects (' + e.l + ')';
      case 'gap': return who + ' detects a ' + e.l + ' in ' + convName(e.c);
      case 'woken': return who + ' is woken by a push';
      default: return e.l || e.k;
    }
  }

  function drawTimeline() {
    var W = 1000, H = 56, end = Math.max(D.end, 1);
    var svg = document.createElementNS(SVGNS, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('id', 'v-timeline-svg');
    function x(t) { return (t / end) * W; }
    function add(tag, attrs, title) {
      var e = document.createElementNS(SVGNS, tag);
      Object.keys(attrs).forEach(function (a) { e.setAttribute(a, attrs[a]); });
      if (title) { var ti = document.createElementNS(SVGNS, 'title'); ti.textContent = title; e.appendChild(ti); }
      svg.appendChild(e);
      return e;
    }
    add('rect', { x: 0, y: 0, width: W, height: H, fill: '#f4f4f4', 'class': 'v-track' });
    D.faults.forEach(function (f, i) {
      add('rect', { x: x(f.from), y: 4, width: Math.max(x(f.to) - x(f.from), 2), height: 30,
        'class': 'v-fault', 'data-fault': i, 'data-from': f.from, 'data-to': f.to },
        f.label + ' (' + f.from + '–' + f.to + ' ms; ' + f.hosts.join(', ') + ')');
    });
    // Event density: one faint tick per event, so busy stretches show.
    var seen = {};
    ev.forEach(function (e) {
      var px = Math.round(x(e.t));
      if (!seen[px]) { seen[px] = 1; add('rect', { x: px, y: 36, width: 1, height: 8, fill: '#999' }); }
    });
    D.violations.forEach(function (v, i) {
      add('rect', { x: x(v.t) - 2, y: 0, width: 4, height: H, 'class': 'v-vmark', 'data-violation': i },
        v.check + ' at ' + v.t + ' ms');
    });
    add('rect', { x: 0, y: 0, width: 2, height: H, id: 'v-cursor' });
    svg.addEventListener('click', function (evt) {
      var target = evt.target;
      if (target.getAttribute('data-violation') !== null) {
        jumpToViolation(+target.getAttribute('data-violation'));
        return;
      }
      var r = svg.getBoundingClientRect();
      var t = ((evt.clientX - r.left) / r.width) * end;
      if (target.getAttribute('data-fault') !== null) { t = +target.getAttribute('data-from'); }
      go(stepAt(t));
    });
    $('v-timeline').appendChild(svg);
    // Time labels as HTML: text inside the stretched SVG would be stretched too.
    var axis = el('div', { 'class': 'v-axis' });
    for (var q = 0; q <= 5; q++) { axis.appendChild(el('span', {}, ((end * q) / 5000).toFixed(1) + ' s')); }
    $('v-timeline').appendChild(axis);
  }

  function drawDevices() {
    var box = $('v-devices');
    D.devices.forEach(function (d, i) {
      var b = el('button', { type: 'button', 'class': 'v-dev', 'data-dev': d.name }, d.name);
      b.addEventListener('click', function () { dev = i; render(); });
      box.appendChild(b);
    });
  }

  function drawViolations() {
    var box = $('v-violations');
    if (!D.violations.length) { box.appendChild(el('li', { 'class': 'v-none' }, 'none: every invariant holds')); }
    D.violations.forEach(function (v, i) {
      var li = el('li');
      var b = el('button', { type: 'button', 'class': 'v-viol', 'data-violation': i, 'data-t': v.t,
        'data-msg': v.message, 'data-dev': v.device },
        v.check + ' at ' + v.t + ' ms' + (v.message ? ' · ' + v.message : '') + (v.device ? ' on ' + v.device : ''));
      b.title = v.detail;
      b.addEventListener('click', function () { jumpToViolation(i); });
      li.appendChild(b);
      if (n && n < D.events_total && v.t > ev[n - 1].t) {
        // Past the cap's cut the page cannot show the moment itself: say where it goes instead.
        b.setAttribute('data-after-cut', '1');
        li.appendChild(el('div', { 'class': 'v-detail' }, 'after the cap cut the events: goes to the last kept step, ' + ev[n - 1].t + ' ms'));
      }
      li.appendChild(el('div', { 'class': 'v-detail' }, v.detail));
      box.appendChild(li);
    });
    if (D.violations_total > D.violations.length) {
      box.appendChild(el('li', { 'class': 'v-none' }, (D.violations_total - D.violations.length) + ' more in run.json'));
    }
  }

  function jumpToViolation(i) {
    var v = D.violations[i];
    D.devices.forEach(function (d, j) { if (d.name === v.device) { dev = j; } });
    if (v.message && byName[v.message] !== undefined) { sel = byName[v.message]; drawHops(); }
    go(stepAt(v.t));
  }

  function drawMessages() {
    var box = $('v-messages');
    var ul = el('ul', { id: 'v-msglist' });
    D.messages.forEach(function (m, i) {
      var li = el('li');
      var b = el('button', { type: 'button', 'class': 'v-msg', 'data-msg': m.id },
        m.id + ' · ' + convName(m.conv) + (m.seq === null ? '' : ' #' + m.seq) + ' · ' + m.text);
      b.addEventListener('click', function () { select(i); });
      li.appendChild(b);
      ul.appendChild(li);
    });
    box.appendChild(ul);
  }

  function select(i) { sel = i; drawHops(); markHops(); }

  function drawHops() {
    var ol = $('v-hops');
    ol.textContent = '';
    if (sel < 0) { $('v-hops-title').textContent = 'Hops (click a message)'; return; }
    var m = D.messages[sel];
    $('v-hops-title').textContent = 'Hops of ' + m.id + ' "' + m.text + '"';
    ol.setAttribute('data-msg', m.id);
    m.hops.forEach(function (h) {
      var t = h[0], kind = h[1], label = h[2], at = D.places[h[3]];
      var li = el('li', { 'class': 'v-hop', 'data-t': t, 'data-kind': kind, 'data-at': at });
      li.appendChild(el('span', { 'class': 'v-hop-t' }, t + ' ms'));
      li.appendChild(document.createTextNode(' ' + (HOP_WORDS[kind] || kind) + (label ? ' (' + label + ')' : '') + ' '));
      li.appendChild(el('span', { 'class': 'v-hop-at' }, at));
      li.addEventListener('click', function () { go(stepAt(t)); });
      ol.appendChild(li);
    });
    if (m.hops_cut) { ol.appendChild(el('li', { 'class': 'v-none' }, m.hops_cut + ' later hops cut (at most ' + D.phone_hops_max + ' phone-side and ' + D.hops_max + ' server-side)')); }
  }

  // Hops already taken at the current time are marked, so stepping shows the message move.
  function markHops() {
    if (!n) { return; }
    var t = ev[k].t;
    Array.prototype.forEach.call(document.querySelectorAll('#v-hops .v-hop'), function (li) {
      li.classList.toggle('v-past', +li.getAttribute('data-t') <= t);
    });
  }

  function renderPhone() {
    var box = $('v-phone');
    box.textContent = '';
    var me = D.devices[dev];
    var st = phoneAt(dev, k);
    $('v-phone-title').textContent = 'Phone ' + me.name + ' at ' + (n ? ev[k].t : 0) + ' ms';
    var head = el('div', { 'class': 'v-phone-head', id: 'v-phone-head', 'data-device': me.name, 'data-conn': st.conn },
      me.name + ' · ' + st.conn + (st.open === null ? '' : ' · open: ' + convName(st.open)));
    box.appendChild(head);
    if (!st.chats.length) { box.appendChild(el('p', { 'class': 'v-none' }, 'no chats yet')); }
    st.chats.forEach(function (ch) {
      var c = D.convs[ch.c];
      var sec = el('section', { 'class': 'v-chat', 'data-conv': c.name });
      var hd = el('header');
      hd.appendChild(el('b', {}, c.name));
      var peer = c.members.filter(function (u) { return u !== me.user; })[0];
      if (peer !== undefined) {
        var p = presenceText(st.presence[peer]);
        hd.appendChild(document.createTextNode(' '));
        hd.appendChild(el('span', { 'class': 'v-presence', 'data-presence': p[0], 'data-user': peer }, p[1]));
      }
      sec.appendChild(hd);
      var shown = ch.bubbles.slice(-BUBBLES_MAX);
      if (ch.bubbles.length > shown.length) {
        sec.appendChild(el('div', { 'class': 'v-earlier', 'data-earlier': ch.bubbles.length - shown.length },
          (ch.bubbles.length - shown.length) + ' earlier messages'));
      }
      shown.forEach(function (b) {
        var m = D.messages[b.m];
        var attrs = { 'class': 'v-bubble ' + (b.out ? 'v-out' : 'v-in'), 'data-msg': m.id };
        if (m.from === dev) { attrs['data-tick'] = TICKS[st.level[b.m] || 0]; }
        if (b.m === sel) { attrs['class'] += ' v-sel'; }
        if (m.change) { attrs['class'] += ' v-change'; }
        var div = el('div', attrs, m.text);
        if (m.from === dev) {
          var tk = TICKS[st.level[b.m] || 0];
          div.appendChild(el('span', { 'class': 'v-tick v-tick-' + tk }, GLYPH[tk]));
        }
        div.addEventListener('click', function () { select(b.m); renderPhone(); });
        sec.appendChild(div);
      });
      box.appendChild(sec);
    });
  }

  function render() {
    if (!n) { $('v-now').textContent = 'no events'; return; }
    var e = ev[k];
    var now = $('v-now');
    now.textContent = 'event ' + (k + 1) + ' of ' + n + ' · ' + e.t + ' ms';
    now.setAttribute('data-k', k);
    now.setAttribute('data-t', e.t);
    now.setAttribute('data-hist', e.i);
    $('v-scrub').value = k;
    var cur = $('v-event');
    cur.textContent = '';
    // The current event and the few before it, so a step shows what changed.
    for (var i = Math.max(0, k - 5); i <= k; i++) {
      cur.appendChild(el('div', { 'class': i === k ? 'v-ev v-cur' : 'v-ev', 'data-hist': ev[i].i, 'data-kind': ev[i].k },
        ev[i].t + ' ms · ' + describe(ev[i])));
    }
    var cursor = $('v-cursor');
    if (cursor) { cursor.setAttribute('x', (e.t / Math.max(D.end, 1)) * 1000 - 1); }
    Array.prototype.forEach.call(document.querySelectorAll('.v-dev'), function (b) {
      b.setAttribute('aria-pressed', b.getAttribute('data-dev') === D.devices[dev].name ? 'true' : 'false');
    });
    renderPhone();
    markHops();
  }

  function go(i) {
    k = Math.max(0, Math.min(n - 1, i));
    render();
  }

  function init() {
    if (!D.devices.length) { $('v-now').textContent = 'no events'; root.setAttribute('data-ready', '1'); return; }
    $('v-scrub').max = Math.max(n - 1, 0);
    // Start on the first violation's device, else the first device that sent something.
    var first = D.violations.length ? D.violations[0].device : null;
    dev = 0;
    D.devices.forEach(function (d, j) { if (d.name === first) { dev = j; } });
    if (first === null) {
      for (var i = 0; i < n; i++) { if (ev[i].k === 'sent') { dev = ev[i].d; break; } }
    }
    drawTimeline();
    drawDevices();
    drawViolations();
    drawMessages();
    drawHops();
    $('v-scrub').addEventListener('input', function () { go(+this.value); });
    $('v-prev').addEventListener('click', function () { go(k - 1); });
    $('v-next').addEventListener('click', function () { go(k + 1); });
    document.addEventListener('keydown', function (evt) {
      var tag = evt.target && evt.target.tagName;
      if (tag === 'TEXTAREA' || tag === 'SELECT' || (tag === 'INPUT' && evt.target.type !== 'range')) { return; }
      var step = evt.shiftKey ? 10 : 1;
      var to = null;
      if (evt.key === 'ArrowRight') { to = k + step; }
      else if (evt.key === 'ArrowLeft') { to = k - step; }
      else if (evt.key === 'Home') { to = 0; }
      else if (evt.key === 'End') { to = n - 1; }
      if (to === null) { return; }
      // The range input would move itself too: one step per key press, ours.
      evt.preventDefault();
      go(to);
    });
    render();
    root.setAttribute('data-ready', '1');
  }
  init();
})();
