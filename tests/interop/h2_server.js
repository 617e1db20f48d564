// An HBONE destination written with Node's own http2 + TLS stacks: listens on 15008 with a
// server certificate, requires a client certificate from the bundle, answers CONNECT with 200
// and echoes the stream (upper-casing nothing: bytes back as they came). Prints one JSON line
// per stream: {"event":"connect","authority","peer_san","tls","alpn","forwarded","bytes"}.
//
// usage: node h2_server.js --port 15008 --cert F --key F --ca F [--ready FILE]
'use strict';
const http2 = require('http2');
const fs = require('fs');

const a = {port: 15008};
const v = process.argv.slice(2);
for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];

const server = http2.createSecureServer({
  cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key), ca: fs.readFileSync(a.ca),
  requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3',
});
server.on('stream', (stream, headers) => {
  const sock = stream.session.socket;
  const peer = sock.getPeerCertificate();
  const ev = {event: 'connect', method: headers[':method'], authority: headers[':authority'],
              peer_san: peer && peer.subjectaltname ? peer.subjectaltname : null,
              tls: sock.getProtocol(), alpn: sock.alpnProtocol,
              forwarded: headers['forwarded'] || null, bytes: 0};
  if (headers[':method'] !== 'CONNECT') {
    stream.respond({':status': 400});
    stream.end();
    process.stdout.write(JSON.stringify(ev) + '\n');
    return;
  }
  stream.respond({':status': 200});
  stream.on('data', (d) => { ev.bytes += d.length; stream.write(d); });
  stream.on('end', () => { stream.end(); process.stdout.write(JSON.stringify(ev) + '\n'); });
  stream.on('error', () => {});
});
server.on('tlsClientError', (e) => {
  process.stdout.write(JSON.stringify({event: 'tls_error', error: String(e.message)}) + '\n');
});
server.listen(Number(a.port), () => { if (a.ready) fs.writeFileSync(a.ready, 'ready\n'); });
