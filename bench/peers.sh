# shellcheck shell=bash
# The peers of `make bench`: haproxy and stunnel4 as mutual-TLS tunnels between pod c (client
# side, node1) and pod d (server side, node2), the way a user would put them in front of an
# app instead of a mesh. Sourced by bench/run, which sets PEERS (the directory with c/ and d/,
# each holding cert.pem, key.pem, haproxy.pem = cert + key) and CA_PEM (moat's root).
#
# Both: TLS 1.3 only; ECDSA P-256 leaves minted by `moatctl ca issue` from moat's own CA; the
# server requires a client certificate and both sides verify the peer's chain against the CA
# (neither checks the SPIFFE URI SAN, which moat does: a slightly cheaper check). One process
# per side pinned to its node's CPU like moatd: haproxy with nbthread 1; Debian's stunnel4 is
# built with its PTHREAD model (one thread per connection), which cannot be changed by
# configuration, so its threads share that one CPU. Each keeps its default TLS session
# resumption and logs nothing per connection (moatd writes its access log).

HAPROXY_ECHO=17000 HAPROXY_IPERF=15201 # client-side listeners in pod c (127.0.0.1)
HAPROXY_ECHO_TLS=17443 HAPROXY_IPERF_TLS=15443 # server-side TLS listeners in pod d
STUNNEL_ECHO=27000 STUNNEL_IPERF=25201
STUNNEL_ECHO_TLS=27443 STUNNEL_IPERF_TLS=25443
PEER_SERVER=10.244.2.20 # pod d

haproxy_global() {
	cat <<EOF
global
    nbthread 1
    maxconn 5000
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
EOF
}

haproxy_client_cfg() {
	haproxy_global
	local name local_port tls_port
	while read -r name local_port tls_port; do
		cat <<EOF
frontend ${name}_out
    bind 127.0.0.1:$local_port
    default_backend ${name}_out
backend ${name}_out
    server d $PEER_SERVER:$tls_port ssl ssl-min-ver TLSv1.3 crt $PEERS/c/haproxy.pem ca-file $CA_PEM verify required
EOF
	done <<<"echo $HAPROXY_ECHO $HAPROXY_ECHO_TLS
iperf $HAPROXY_IPERF $HAPROXY_IPERF_TLS"
}

haproxy_server_cfg() {
	haproxy_global
	local name tls_port app_port
	while read -r name tls_port app_port; do
		cat <<EOF
frontend ${name}_in
    bind :$tls_port ssl ssl-min-ver TLSv1.3 crt $PEERS/d/haproxy.pem ca-file $CA_PEM verify required
    default_backend ${name}_in
backend ${name}_in
    server app 127.0.0.1:$app_port
EOF
	done <<<"echo $HAPROXY_ECHO_TLS 7000
iperf $HAPROXY_IPERF_TLS 5201"
}

stunnel_global() { # SIDE-DIR
	cat <<EOF
foreground = yes
pid =
debug = 3
cert = $PEERS/$1/cert.pem
key = $PEERS/$1/key.pem
CAfile = $CA_PEM
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
EOF
}

stunnel_client_cfg() {
	stunnel_global c
	printf '[echo]\nclient = yes\naccept = 127.0.0.1:%s\nconnect = %s:%s\n' "$STUNNEL_ECHO" "$PEER_SERVER" "$STUNNEL_ECHO_TLS"
	printf '[iperf]\nclient = yes\naccept = 127.0.0.1:%s\nconnect = %s:%s\n' "$STUNNEL_IPERF" "$PEER_SERVER" "$STUNNEL_IPERF_TLS"
}

stunnel_server_cfg() {
	stunnel_global d
	printf '[echo]\naccept = 0.0.0.0:%s\nconnect = 127.0.0.1:7000\n' "$STUNNEL_ECHO_TLS"
	printf '[iperf]\naccept = 0.0.0.0:%s\nconnect = 127.0.0.1:5201\n' "$STUNNEL_IPERF_TLS"
}
