// An HBONE client written with Node's own http2 + TLS stacks (not moat's): opens a CONNECT
// stream to HOST:15008 presenting a client certificate, sends bytes, reads the reply.
// Prints one JSON line: {"ok", "status", "tls", "alpn", "server_san", "sent", "received",
// "echo_ok", "error"}. Used to prove moat's HBONE server interoperates.
//
// usage: node h2_client.js --host IP --port 15008 --authority IP:PORT [--method CONNECT]
//        [--cert F --key F] --ca F [--send N] [--expect-echo] [--timeout MS]
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
    a[k] = v[++i];
  }
  a.send = Number(a.send);
  a.timeout = Number(a.timeout);
  return a;
}

const a = args();
const out = {ok: false, status: null, tls: null, alpn: null, server_san: null, sent: 0,
             received: 0, echo_ok: null, error: null};
let done = false;
function finish(err) {
  if (done) return;
  done = true;
  if (err) out.error = String(err.message || err);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(out.ok ? 0 : 1);
}
setTimeout(() => finish(new Error('timeout')), a.timeout).unref();

const tls = {ca: fs.readFileSync(a.ca), ALPNProtocols: ['h2'], servername: '',
             minVersion: 'TLSv1.3', checkServerIdentity: () => undefined};
if (a.cert) { tls.cert = fs.readFileSync(a.cert); tls.key = fs.readFileSync(a.key); }
const session = http2.connect(`https://${a.host}:${a.port}`, tls);
session.on('error', finish);
session.on('connect', (s, sock) => {
  out.tls = sock.getProtocol();
  out.alpn = sock.alpnProtocol;
  const peer = sock.getPeerCertificate();
  out.server_san = peer && peer.subjectaltname ? peer.subjectaltname : null;
});
const headers = {':method': a.method, ':authority': a.authority};
if (a.method !== 'CONNECT') { headers[':path'] = '/'; headers[':scheme'] = 'https'; }
const req = session.request(headers, {endStream: false});
const payload = crypto.randomBytes(a.send);
const chunks = [];
req.on('response', (h) => {
  out.status = h[':status'];
  if (out.status !== 200) { out.ok = out.status !== undefined; req.close(); session.close(); finish(); return; }
  req.end(payload);
  out.sent = payload.length;
});
req.on('data', (d) => { chunks.push(d); out.received += d.length; });
req.on('end', () => {
  const got = Buffer.concat(chunks);
  if (a.expectEcho) out.echo_ok = got.equals(payload);
  out.ok = out.status === 200 && (!a.expectEcho || out.echo_ok);
  session.close();
  finish();
});
req.on('error', finish);
