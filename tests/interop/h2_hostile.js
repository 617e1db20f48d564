// A hostile (or merely odd) HBONE destination, written with Node's own TLS and http2 stacks,
// presenting the destination's real SVID and requiring the client's: it completes the mTLS
// handshake and answers PINGs like a healthy peer, then misbehaves on streams, per --mode:
//   ok      200, a banner of --banner bytes, then echoes the stream (a healthy destination
//           whose reply is longer than the request, so byte counts cannot be confused)
//   hang    never answers the CONNECT (no HEADERS), keeps the stream open
//   silent  answers 200, then never sends anything (reads what comes)
//   info    100 Continue first, then as ok
//   push    sends PUSH_PROMISE although the client disabled push (raw frames over Node's TLS:
//           Node's http2 refuses to push to such a client)
//   stall   as ok for the first stream; when it closes, every connection open at that moment
//           goes silent (its TCP socket is no longer read: no frame, no PING answer, no FIN);
//           connections made later are served as ok
//
// Prints one JSON line per event on stdout:
//   {"event":"listening","port","mode"}
//   {"event":"stream_open","authority"}  {"event":"stream_close","bytes"}
//
// usage: node h2_hostile.js --mode M --cert F --key F --ca F [--port 15008] [--banner 82]
//        [--ready FILE]
'use strict';
const fs = require('fs');
const http2 = require('http2');
const net = require('net');
const {Duplex} = require('stream');
const tls = require('tls');

const a = {port: 15008, banner: 82};
const v = process.argv.slice(2);
for (let i = 0; i + 1 < v.length; i += 2) a[v[i].replace(/^--/, '')] = v[i + 1];
if (!a.mode || !a.cert || !a.key || !a.ca) {
  process.stderr.write('h2_hostile.js: --mode, --cert, --key and --ca are required\n');
  process.exit(2);
}
const banner = Buffer.alloc(Number(a.banner), 'B');
function emit(ev) { process.stdout.write(JSON.stringify(ev) + '\n'); }
const creds = {cert: fs.readFileSync(a.cert), key: fs.readFileSync(a.key), ca: fs.readFileSync(a.ca),
               requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'],
               minVersion: 'TLSv1.3'};

function onStream(stream, headers) {
  emit({event: 'stream_open', authority: headers[':authority']});
  let bytes = 0;
  stream.on('error', () => {});
  stream.on('close', () => {
    emit({event: 'stream_close', bytes});
    if (a.mode === 'stall' && !stalled) {
      stalled = true;
      for (const raw of raws) raw.pause();
      emit({event: 'stalled', connections: raws.length});
    }
  });
  const echo = a.mode === 'ok' || a.mode === 'info' || a.mode === 'stall';
  stream.on('data', (d) => {
    bytes += d.length;
    if (echo) stream.write(d);
  });
  stream.on('end', () => { if (echo) stream.end(); });
  if (a.mode === 'hang') return;
  if (a.mode === 'info') stream.additionalHeaders({':status': 100});
  stream.respond({':status': 200});
  if (a.mode !== 'silent') stream.write(banner);
}

// ---- push: a minimal HTTP/2 speaker on Node's TLS ----
function frame(type, flags, sid, payload) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(sid & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

function rawConnection(sock) {
  let buf = Buffer.alloc(0);
  let preface = false;
  sock.on('error', () => {});
  sock.write(frame(4, 0, 0, Buffer.alloc(0))); // SETTINGS
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    if (!preface) {
      if (buf.length < 24) return;
      buf = buf.subarray(24);
      preface = true;
    }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3), type = buf[3], flags = buf[4];
      const sid = buf.readUInt32BE(5) & 0x7fffffff;
      if (buf.length < 9 + len) return;
      const payload = buf.subarray(9, 9 + len);
      buf = buf.subarray(9 + len);
      if (type === 4 && !(flags & 1)) sock.write(frame(4, 1, 0, Buffer.alloc(0)));
      else if (type === 6 && !(flags & 1)) sock.write(frame(6, 1, 0, payload));
      else if (type === 1) {
        emit({event: 'stream_open', authority: null});
        // promised stream 2: GET https / (indexed), :authority "x"
        sock.write(frame(5, 4, sid, Buffer.from([0, 0, 0, 2, 0x82, 0x87, 0x84, 0x41, 1, 0x78])));
      }
    }
  });
}

// stall: TCP is accepted here and handed to the TLS/http2 server through a JS duplex (TLS then
// reads through JavaScript, not straight from the kernel socket), so pausing the TCP socket
// really silences the connection.
const raws = [];
let stalled = false;
function stallable(raw) {
  raws.push(raw);
  raw.on('error', () => {});
  const d = new Duplex({
    read() { if (!stalled) raw.resume(); },
    write(chunk, enc, cb) { raw.write(chunk, cb); },
    final(cb) { raw.end(); cb(); },
  });
  raw.on('data', (c) => { if (!d.push(c)) raw.pause(); });
  raw.on('end', () => d.push(null));
  d.on('error', () => {});
  h2server.emit('connection', d);
}
const h2server = a.mode === 'push' ? null : http2.createSecureServer(creds).on('stream', onStream);
const server = a.mode === 'push' ? tls.createServer(creds, rawConnection)
             : a.mode === 'stall' ? net.createServer(stallable)
             : h2server;
if (h2server && h2server !== server) h2server.on('sessionError', () => {});
(h2server || server).on('tlsClientError', (e) => emit({event: 'tls_error', error: String(e.message).trim()}));
server.on('sessionError', () => {});
server.listen(Number(a.port), () => {
  emit({event: 'listening', port: Number(a.port), mode: a.mode});
  if (a.ready) fs.writeFileSync(a.ready, 'ready\n');
});
