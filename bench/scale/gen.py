#!/usr/bin/env python3
"""Generate a mesh configuration at cluster scale for bench/scale/run.

N WorkloadEntries spread over M nodes (label moat.dev/node: node-K; node-0 is the measured
node; a node's pods come from every namespace), P AuthorizationPolicies in a realistic mix (namespace-wide, selector-based, principals
lists, ipBlocks, DENY rules, named ports, when conditions, mesh-wide root-namespace rules,
egress targetRefs), S ServiceEntries (static addresses). One policy per file
(policy-NNNN.yaml) so one policy change is one file change. Deterministic for a seed.

usage: gen.py OUT_DIR [--workloads N] [--nodes M] [--policies P] [--services S]
              [--namespaces K] [--seed X]
"""
import argparse
import os
import random

APPS = 10


def ip_of(i):
    n = i + 1
    return "10.%d.%d.%d" % (64 + (n >> 16), (n >> 8) & 255, n & 255)


def workload(i, ns_n, nodes):
    ns = "ns-%02d" % (i % ns_n)
    app = "app-%d" % ((i // ns_n) % APPS)
    return ns, app, (
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: wl-%05d, namespace: %s}\n"
        "spec: {address: '%s', serviceAccount: sa-%s, labels: {app: %s, version: v%d, "
        "moat.dev/node: node-%d}}\n" % (i, ns, ip_of(i), app, app, i % 3,
                                         (i // ns_n) % nodes))


def principal(ns, app):
    return "cluster.local/ns/%s/sa/sa-%s" % (ns, app)


def policy(k, r, ns_n, services):
    ns = "ns-%02d" % r.randrange(ns_n)
    app = "app-%d" % r.randrange(APPS)
    other = ["ns-%02d" % r.randrange(ns_n) for _ in range(3)]
    head = ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
            "metadata: {name: policy-%04d, namespace: %s}\n" % (k, ns))
    sel = "selector: {matchLabels: {app: %s}}, " % app
    princ = ", ".join("'%s'" % principal(o, "app-%d" % r.randrange(APPS)) for o in other)
    kind = k % 20
    if kind == 0:   # namespace-wide ALLOW from a few namespaces
        return head + "spec: {rules: [{from: [{source: {namespaces: [%s, %s]}}]}]}\n" % (ns, other[0])
    if kind == 1:   # mesh-wide DENY in the root namespace
        head = head.replace("namespace: %s" % ns, "namespace: istio-system")
        return head + ("spec: {action: DENY, rules: [{from: [{source: {namespaces: [%s]}}], "
                       "to: [{operation: {ports: ['%d']}}]}]}\n" % (other[0], 2300 + k % 50))
    if kind in (2, 3, 4):  # DENY by principals on admin ports
        return head + ("spec: {%saction: DENY, rules: [{from: [{source: {principals: [%s]}}], "
                       "to: [{operation: {ports: ['22', '%d']}}]}]}\n" % (sel, princ, 9000 + k % 100))
    if kind in (5, 6):  # ipBlocks
        return head + ("spec: {%srules: [{from: [{source: {ipBlocks: ['10.64.%d.0/24'], "
                       "notIpBlocks: ['10.64.%d.7/32']}}]}]}\n" % (sel, k % 40, k % 40))
    if kind == 7:   # named ports (fail closed)
        return head + ("spec: {%srules: [{from: [{source: {namespaces: [%s]}}], "
                       "to: [{operation: {ports: [http, '8080']}}]}]}\n" % (sel, ns))
    if kind == 8:   # when conditions, typed at load
        return head + ("spec: {%srules: [{when: [{key: source.ip, values: ['10.64.0.0/12']}, "
                       "{key: destination.port, values: ['8080', '8443']}]}]}\n" % sel)
    if kind == 9 and services:   # egress: ServiceEntry targetRef
        se = r.randrange(services)
        head = head.replace("namespace: %s}" % ns, "namespace: egress}")
        return head + ("spec: {targetRefs: [{kind: ServiceEntry, group: networking.istio.io, "
                       "name: se-%03d}], rules: [{from: [{source: {namespaces: [%s]}}]}]}\n"
                       % (se, ns))
    # selector ALLOW from a principals list on two ports (the common case)
    return head + ("spec: {%srules: [{from: [{source: {principals: [%s]}}], "
                   "to: [{operation: {ports: ['8080', '%d']}}]}]}\n" % (sel, princ, 8000 + k % 100))


def service(k):
    return ("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            "metadata: {name: se-%03d, namespace: egress}\n"
            "spec: {hosts: [svc-%03d.example.com], addresses: ['198.18.%d.%d'], "
            "ports: [{number: 443, name: https, protocol: TLS}], resolution: STATIC, "
            "location: MESH_EXTERNAL}\n" % (k, k, k >> 8, k & 255))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--workloads", type=int, default=10000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--namespaces", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    r = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "00-mesh.yaml"), "w") as f:
        f.write("apiVersion: moat.dev/v1\nkind: MeshConfig\nmetadata: {name: mesh}\n"
                "spec: {trustDomain: cluster.local, rootNamespace: istio-system}\n")
        for n in range(a.namespaces):
            f.write("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns-%02d, labels: "
                    "{istio.io/dataplane-mode: ambient}}\n" % n)
    # 1,000 WorkloadEntries a file: every file stays under the loader's 1 MiB bound.
    for start in range(0, a.workloads, 1000):
        with open(os.path.join(a.out, "10-workloads-%03d.yaml" % (start // 1000)), "w") as f:
            for i in range(start, min(start + 1000, a.workloads)):
                f.write(workload(i, a.namespaces, a.nodes)[2])
    with open(os.path.join(a.out, "20-services.yaml"), "w") as f:
        for k in range(a.services):
            f.write(service(k))
    for k in range(a.policies):
        with open(os.path.join(a.out, "policy-%04d.yaml" % k), "w") as f:
            f.write(policy(k, r, a.namespaces, a.services))


if __name__ == "__main__":
    main()
