// Churns app connections: --count TCP connections to --target, at most --concurrency at a
// time; each sends --send bytes, then closes its socket after --hold-ms whatever happened (an
// impatient app in front of a destination that never answers). Bounded in count and time.
//
// Prints one JSON line: {"attempted","connected","failed","replied","ms"}
//   connected  connect() succeeded (moat's capture accepts before the tunnel exists)
//   failed     connect() or the socket failed (e.g. reset by a cap refusal)
//   replied    connections that received any byte
//
// usage: node churn.js --target IP:PORT [--count 1000] [--concurrency 100] [--hold-ms 100]
//        [--send 10] [--timeout-ms 120000]
'use strict';
const net = require('net');

const a = {count: 1000, concurrency: 100, 'hold-ms': 100, send: 10, 'timeout-ms': 120000};
const v = process.argv.slice(2);
for (let i = 0; i + 1 < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
if (!a.target) {
  process.stderr.write('churn.js: --target IP:PORT is required\n');
  process.exit(2);
}
const [host, port] = [a.target.replace(/:\d+$/, ''), Number(a.target.replace(/^.*:/, ''))];
const count = Number(a.count), conc = Number(a.concurrency), hold = Number(a['hold-ms']);
const payload = Buffer.alloc(Number(a.send), 'x');
const out = {attempted: 0, connected: 0, failed: 0, replied: 0, ms: 0};
const t0 = Date.now();
let active = 0;

function finish() {
  out.ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}
setTimeout(finish, Number(a['timeout-ms'])).unref();

function one() {
  out.attempted++;
  active++;
  let ended = false;
  const s = net.connect({host, port});
  const end = (failed) => {
    if (ended) return;
    ended = true;
    if (failed) out.failed++;
    s.destroy();
    active--;
    next();
  };
  s.on('connect', () => {
    out.connected++;
    s.write(payload);
    setTimeout(() => end(false), hold);
  });
  let got = false;
  s.on('data', () => { if (!got) { got = true; out.replied++; } });
  s.on('error', () => end(true));
  s.on('close', () => end(false));
}

function next() {
  while (active < conc && out.attempted < count) one();
  if (active === 0 && out.attempted >= count) finish();
}
next();
