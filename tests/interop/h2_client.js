// An HBONE client written with Node's own http2 + TLS stacks (not moat's): opens a CONNECT
// stream to HOST:15008, optionally presenting a client certificate, sends bytes after the 200,
// half-closes and reads the reply. Used to prove that moat's HBONE server interoperates with a
// stack we did not write, and that it refuses what it must.
//
// Prints one JSON line:
//   {"ok", "status", "tls", "alpn", "server_san", "sent", "received", "echo_ok",
//    "sent_sha256", "received_sha256", "error", "error_codes"}
//   ok          a response arrived (any status); with --expect-echo: status 200 and the bytes
//               came back unchanged
//   status      the :status of the response, null when none arrived (TLS refused, reset)
//   tls, alpn   what Node negotiated (null when the handshake did not finish on our side)
//   server_san  the server certificate's subjectAltName as Node prints it ("URI:spiffe://...")
//   sent_sha256, received_sha256  hex sha256 of the bytes sent and of those received (null
//               until sent / until the stream ended), for a peer that checks them itself
//   error       every error seen, joined with " | " (a TLS 1.3 client learns that the server
//               refused its certificate from the alert that follows the handshake)
//   error_codes Node's error codes, e.g. ERR_SSL_TLSV1_ALERT_UNKNOWN_CA
//   local_port  the client's TCP port (what the server must log as the source port)
//   closed_ms   with --idle-only: when the server closed the session (ms after connecting)
// --forwarded V sends `forwarded: V` (a claim the server must not take as the source).
// --idle-only opens the session and no stream, and waits for the server to close it: ok when
// it does within --timeout.
// Exit status: 0 when ok, 1 otherwise, 2 on bad arguments.
//
// usage: node h2_client.js --host IP [--port 15008] --authority IP:PORT [--method CONNECT]
//        [--cert F --key F] --ca F [--send N] [--expect-echo] [--timeout MS]
//        [--forwarded VALUE] [--idle-only]
'use strict';
const http2 = require('http2');
const fs = require('fs');
const crypto = require('crypto');

function args() {
  const a = {port: 15008, method: 'CONNECT', send: 4096, timeout: 10000};
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i++) {
    const k = v[i].replace(/^--/, '');
    if (k === 'expect-echo') { a.expectEcho = true; continue; }
    if (k === 'idle-only') { a.idleOnly = true; continue; }
    if (i + 1 >= v.length) usage(`--${k} needs a value`);
    a[k] = v[++i];
  }
  if (!a.host || !a.authority || !a.ca) usage('--host, --authority and --ca are required');
  if (!!a.cert !== !!a.key) usage('--cert and --key go together');
  a.send = Number(a.send);
  a.timeout = Number(a.timeout);
  return a;
}

function usage(why) {
  process.stderr.write(`h2_client.js: ${why}\n`);
  process.exit(2);
}

const a = args();
const out = {ok: false, status: null, tls: null, alpn: null, server_san: null, sent: 0,
             received: 0, echo_ok: null, sent_sha256: null, received_sha256: null, error: null, error_codes: [], local_port: null,
             closed_ms: null};
const errors = [];
let done = false;

function finish() {
  if (done) return;
  done = true;
  if (errors.length) out.error = errors.join(' | ');
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.ok ? 0 : 1);
}

// Errors come in bursts (the session's, then the stream's "caused by" the same): collect them
// for a moment so the report names the root cause, not only the first symptom.
function failed(err) {
  const msg = String((err && err.message) || err).trim();
  if (!errors.includes(msg)) errors.push(msg);
  if (err && err.code && !out.error_codes.includes(err.code)) out.error_codes.push(err.code);
  setTimeout(finish, 100);
}

setTimeout(() => { failed(new Error(`timeout after ${a.timeout} ms`)); finish(); }, a.timeout)
  .unref();

const tls = {ca: fs.readFileSync(a.ca), ALPNProtocols: ['h2'], minVersion: 'TLSv1.3',
             // No SNI (as ztunnel and moat). The server's identity is its URI SAN, which we
             // report and the test compares; Node's host-name check does not apply.
             servername: '', checkServerIdentity: () => undefined};
if (a.cert) { tls.cert = fs.readFileSync(a.cert); tls.key = fs.readFileSync(a.key); }
const host = a.host.includes(':') ? `[${a.host}]` : a.host; // IPv6 in brackets
const session = http2.connect(`https://${host}:${a.port}`, tls);
session.on('error', failed);
session.on('close', () => { if (!done && out.status === null) failed(new Error('session closed before a response')); });
let connectedAt = 0;
session.on('connect', (s, sock) => {
  connectedAt = Date.now();
  out.local_port = sock.localPort;
  out.tls = sock.getProtocol();
  out.alpn = sock.alpnProtocol || null;
  const peer = sock.getPeerCertificate();
  out.server_san = peer && peer.subjectaltname ? peer.subjectaltname : null;
});

if (a.idleOnly) {
  session.removeAllListeners('close');
  session.on('close', () => {
    out.closed_ms = connectedAt ? Date.now() - connectedAt : null;
    out.ok = connectedAt > 0;
    finish();
  });
  return;
}
const headers = {':method': a.method, ':authority': a.authority};
if (a.forwarded) headers.forwarded = a.forwarded;
if (a.method !== 'CONNECT') { headers[':path'] = '/'; headers[':scheme'] = 'https'; }
const req = session.request(headers, {endStream: false});
const payload = crypto.randomBytes(a.send);
const chunks = [];
req.on('response', (h) => {
  out.status = h[':status'];
  if (out.status !== 200) {
    out.ok = !a.expectEcho;
    req.close();
    session.close();
    finish();
    return;
  }
  req.end(payload);
  out.sent = payload.length;
  out.sent_sha256 = crypto.createHash('sha256').update(payload).digest('hex');
});
req.on('data', (d) => { chunks.push(d); out.received += d.length; });
req.on('end', () => {
  const got = Buffer.concat(chunks);
  out.received_sha256 = crypto.createHash('sha256').update(got).digest('hex');
  if (a.expectEcho) out.echo_ok = got.equals(payload);
  out.ok = out.status === 200 && (!a.expectEcho || out.echo_ok);
  session.close();
  finish();
});
req.on('error', failed);
req.on('close', () => { if (!done && out.status === null) failed(new Error('stream closed before a response')); });
