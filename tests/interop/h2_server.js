// An HBONE destination written with Node's own http2 + TLS stacks (not moat's), standing in
// for a remote ztunnel: listens on 15008 with a server certificate, requires a client
// certificate that chains to the bundle, answers CONNECT with 200 and echoes the stream
// (bytes back as they came); any other method gets 400.
//
// Prints one JSON line per event on stdout:
//   {"event":"listening","port"}
//   {"event":"stream","method","authority","peer_san","tls","alpn","forwarded","baggage",
//    "traceparent","status","bytes","ended"}       once per stream, when it closes
//   {"event":"tls_error","error"}                  a handshake the server refused
//
// usage: node h2_server.js [--port 15008] --cert F --key F --ca F [--ready FILE]
'use strict';
const http2 = require('http2');
const fs = require('fs');

const a = {port: 15008};
const v = process.argv.slice(2);
for (let i = 0; i < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
if (!a.cert || !a.key || !a.ca) {
  process.stderr.write('h2_server.js: --cert, --key and --ca are required\n');
  process.exit(2);
}

function emit(ev) { process.stdout.write(JSON.stringify(ev) + '\n'); }

const server = http2.createSecureServer({
  cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key), ca: fs.readFileSync(a.ca),
  requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3',
});

server.on('stream', (stream, headers) => {
  const sock = stream.session.socket;
  const peer = sock.getPeerCertificate();
  const ev = {event: 'stream', method: headers[':method'], authority: headers[':authority'],
              peer_san: peer && peer.subjectaltname ? peer.subjectaltname : null,
              tls: sock.getProtocol(), alpn: sock.alpnProtocol || null,
              forwarded: headers['forwarded'] || null, baggage: headers['baggage'] || null,
              traceparent: headers['traceparent'] || null, status: null, bytes: 0,
              ended: false};
  stream.on('close', () => emit(ev));
  stream.on('error', () => {});
  if (headers[':method'] !== 'CONNECT') {
    ev.status = 400;
    stream.respond({':status': 400}, {endStream: true});
    return;
  }
  ev.status = 200;
  stream.respond({':status': 200});
  stream.on('data', (d) => { ev.bytes += d.length; stream.write(d); });
  stream.on('end', () => { ev.ended = true; stream.end(); });
});
server.on('tlsClientError', (e) => emit({event: 'tls_error', error: String(e.message).trim()}));
server.on('sessionError', () => {});
server.listen(Number(a.port), () => {
  emit({event: 'listening', port: server.address().port}); // the real one when --port 0
  if (a.ready) fs.writeFileSync(a.ready, 'ready\n');
});
