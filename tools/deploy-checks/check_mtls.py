"""The promises of the mtls component (k8s/components/mtls) in a rendered
kustomization that includes it.

usage: check_mtls.py RENDERED.yaml COMPONENTS_JSON BUILTIN_OUT.yaml

kubernetes-validate knows no cert-manager schemas, so this script writes
every object of a built-in kind to BUILTIN_OUT.yaml (for
kubernetes-validate --strict) and checks the cert-manager objects itself:
their fields against cert-manager v1's (a misspelt field would be dropped
silently by a lenient apply), the CA chain, and that each component's
certificate, mount, settings and probes fit together:

- a CA Issuer whose Secret a CA Certificate (isCA) from a selfSigned
  Issuer makes;
- per component: a Certificate from that CA Issuer into <name>-tls, for
  server and client use, naming spiffe://votemesh/<name> and, for a gRPC
  server, every Service that selects it (short, .<ns>.svc and
  .<ns>.svc.cluster.local);
- its Deployment mounts <name>-tls read-only and points TLS_CERT_FILE,
  TLS_KEY_FILE, TLS_CA_FILE into the mount; it sets only variables its
  binary reads;
- gRPC components: HEALTH_LISTEN_ADDR is dual-stack ([::]:port), its port a declared container port,
  and every probe and the Prometheus port use it (the business port
  answers mutual TLS only); their metrics Service targets it; a Service
  port that reaches the business port declares no cleartext appProtocol
  (`kubernetes.io/h2c`, `http`): it declares `https`;
- vote's TLS_ALLOWED_CLIENTS names identities some Certificate holds,
  the gateway's among them; the gateway's VOTE_ADDR / RESULT_ADDR hosts
  are DNS names of the vote / result certificates.
"""

import json
import sys
from urllib.parse import urlparse

import yaml

CERT_MANAGER = "cert-manager.io/v1"
# cert-manager v1 Certificate spec fields (cert-manager 1.16).
CERTIFICATE_FIELDS = {
    "secretName", "issuerRef", "commonName", "dnsNames", "uris", "ipAddresses",
    "emailAddresses", "duration", "renewBefore", "privateKey", "usages", "isCA",
    "subject", "secretTemplate", "keystores", "literalSubject",
    "revisionHistoryLimit", "additionalOutputFormats", "nameConstraints",
    "otherNames", "encodeUsagesInRequest", "renewBeforePercentage",
}
PRIVATE_KEY_FIELDS = {"algorithm", "size", "encoding", "rotationPolicy"}
ISSUER_FIELDS = {"selfSigned", "ca", "acme", "vault", "venafi"}
MOUNT_NAMES = {"TLS_CERT_FILE": "tls.crt", "TLS_KEY_FILE": "tls.key", "TLS_CA_FILE": "ca.crt"}

errors = []


def fail(message):
    errors.append(message)


def main(rendered_path, components_path, builtin_out):
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    with open(components_path) as f:
        components = json.load(f)
    builtin = [o for o in objects if not o["apiVersion"].startswith("cert-manager.io/")]
    with open(builtin_out, "w") as f:
        yaml.safe_dump_all(builtin, f)
    managed = [o for o in objects if o["apiVersion"].startswith("cert-manager.io/")]
    for o in managed:
        if o["apiVersion"] != CERT_MANAGER:
            fail(f"{o['kind']} {o['metadata']['name']}: apiVersion {o['apiVersion']}, not {CERT_MANAGER}")
    certificates = {o["metadata"]["name"]: o for o in managed if o["kind"] == "Certificate"}
    issuers = {o["metadata"]["name"]: o for o in managed if o["kind"] == "Issuer"}
    unknown = {o["kind"] for o in managed} - {"Certificate", "Issuer"}
    if unknown:
        fail(f"unexpected cert-manager kinds {sorted(unknown)}")

    for name, issuer in issuers.items():
        extra = set(issuer.get("spec", {})) - ISSUER_FIELDS
        if extra or len(issuer.get("spec", {})) != 1:
            fail(f"Issuer {name}: spec must be exactly one of {sorted(ISSUER_FIELDS)}, has {sorted(issuer.get('spec', {}))}")
    for name, cert in certificates.items():
        spec = cert.get("spec", {})
        extra = set(spec) - CERTIFICATE_FIELDS
        if extra:
            fail(f"Certificate {name}: unknown fields {sorted(extra)}")
        extra = set(spec.get("privateKey", {})) - PRIVATE_KEY_FIELDS
        if extra:
            fail(f"Certificate {name}: unknown privateKey fields {sorted(extra)}")
        for required in ("secretName", "issuerRef"):
            if required not in spec:
                fail(f"Certificate {name}: no {required}")
        if spec.get("issuerRef", {}).get("name") not in issuers:
            fail(f"Certificate {name}: issuer {spec.get('issuerRef')} is not in the kustomization")

    ca_issuers = [i for i in issuers.values() if "ca" in i.get("spec", {})]
    if len(ca_issuers) != 1:
        fail(f"expected one CA Issuer, found {len(ca_issuers)}")
        return
    ca_issuer = ca_issuers[0]
    ca_secret = ca_issuer["spec"]["ca"].get("secretName")
    ca_certs = [c for c in certificates.values() if c["spec"].get("secretName") == ca_secret]
    if not ca_certs or not ca_certs[0]["spec"].get("isCA"):
        fail(f"the CA Issuer's Secret {ca_secret} is not made by an isCA Certificate")
    elif "selfSigned" not in issuers.get(ca_certs[0]["spec"]["issuerRef"]["name"], {}).get("spec", {}):
        fail("the CA Certificate is not issued by a selfSigned Issuer")

    identities = {uri for c in certificates.values() for uri in c["spec"].get("uris", [])}
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    services = [o for o in objects if o["kind"] == "Service"]
    for name, spec in components.items():
        if spec.get("client"):
            # The vote bot: a client of the gateway's public HTTP edge,
            # which needs no identity of its own.
            continue
        cert = certificates.get(name)
        if cert is None:
            fail(f"{name}: no Certificate")
            continue
        cspec = cert["spec"]
        if cspec["issuerRef"]["name"] != ca_issuer["metadata"]["name"]:
            fail(f"{name}: Certificate not issued by the CA Issuer")
        if cspec.get("secretName") != f"{name}-tls":
            fail(f"{name}: Certificate's Secret is {cspec.get('secretName')}, not {name}-tls")
        for usage in ("server auth", "client auth"):
            if usage not in cspec.get("usages", []):
                fail(f"{name}: Certificate lacks the usage {usage!r}")
        if f"spiffe://votemesh/{name}" not in cspec.get("uris", []):
            fail(f"{name}: Certificate does not name spiffe://votemesh/{name}")
        dns = set(cspec.get("dnsNames", []))
        for service in services:
            # The gateway is a TLS client only: its Services are HTTP.
            if spec["protocol"] != "grpc" or service["spec"].get("selector", {}).get("app.kubernetes.io/name") != name:
                continue
            sname = service["metadata"]["name"]
            ns = service["metadata"].get("namespace", "votemesh")
            for wanted in (sname, f"{sname}.{ns}.svc", f"{sname}.{ns}.svc.cluster.local"):
                if wanted not in dns:
                    fail(f"{name}: Certificate does not name {wanted} (Service {sname})")

        deployment = deployments.get(name)
        if deployment is None:
            fail(f"{name}: no Deployment")
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        volumes = [v for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == f"{name}-tls"]
        if not volumes:
            fail(f"{name}: Secret {name}-tls is not a volume")
            continue
        mounts = [m for m in container.get("volumeMounts", []) if m["name"] == volumes[0]["name"]]
        if not mounts or not mounts[0].get("readOnly"):
            fail(f"{name}: Secret {name}-tls is not mounted read-only")
            continue
        path = mounts[0]["mountPath"].rstrip("/")
        for variable, file in MOUNT_NAMES.items():
            if env.get(variable) != f"{path}/{file}":
                fail(f"{name}: {variable} is {env.get(variable)!r}, not {path}/{file}")
        unread = set(env) - set(spec["env"])
        if unread:
            fail(f"{name}: sets {sorted(unread)}, which its binary does not read")

        if spec["protocol"] == "grpc":
            health = urlparse("//" + (env.get("HEALTH_LISTEN_ADDR") or "")).port
            if not (env.get("HEALTH_LISTEN_ADDR") or "").startswith("[::]:"):
                fail(f"{name}: HEALTH_LISTEN_ADDR is {env.get('HEALTH_LISTEN_ADDR')!r}, not every interface, IPv6 and IPv4 ([::]:port): IPv6-only clusters' probes would go unanswered")
            ports = {p["containerPort"]: p.get("name") for p in container.get("ports", [])}
            if health not in ports:
                fail(f"{name}: HEALTH_LISTEN_ADDR port {health} is not a container port")
                continue
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("grpc", {}).get("port")
                if port != health:
                    fail(f"{name}: {probe} asks port {port}, not the plaintext health port {health}")
            annotation = deployment["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/port")
            if annotation != str(health):
                fail(f"{name}: prometheus.io/port is {annotation}, not {health}")
            for service in services:
                if service["spec"].get("selector", {}).get("app.kubernetes.io/name") != name:
                    continue
                for port in service["spec"].get("ports", []):
                    target = port.get("targetPort", port.get("port"))
                    if target in (health, ports[health]):
                        continue
                    if port.get("appProtocol") != "https":
                        fail(f"Service {service['metadata']['name']} port {port.get('name')}: appProtocol "
                             f"{port.get('appProtocol')!r} on the TLS business port, not 'https'")
            for service in services:
                if service["metadata"]["name"] == f"{name}-metrics":
                    target = service["spec"]["ports"][0]["targetPort"]
                    if target not in (health, ports[health]):
                        fail(f"{name}-metrics targets {target}, not the health port")

    allowed = [a for a in (deployments.get("vote", {}).get("spec", {}).get("template", {}).get("spec", {})
                           .get("containers", [{}])[0].get("env", []))
               if a["name"] == "TLS_ALLOWED_CLIENTS"]
    if not allowed:
        fail("vote: no TLS_ALLOWED_CLIENTS: any certificate from the CA could vote")
    else:
        names = [n.strip() for n in allowed[0]["value"].split(",") if n.strip()]
        for n in names:
            if n not in identities:
                fail(f"vote allows {n}, which no Certificate names")
        if "spiffe://votemesh/gateway" not in names:
            fail("vote does not allow the gateway's identity")

    config = next((o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("app-config")), {})
    for variable, upstream in (("VOTE_ADDR", "vote"), ("RESULT_ADDR", "result")):
        host = urlparse(config.get("data", {}).get(variable, "")).hostname
        if host not in certificates.get(upstream, {}).get("spec", {}).get("dnsNames", []):
            fail(f"the gateway calls {host} ({variable}), which the {upstream} certificate does not name")


if __name__ == "__main__":
    main(*sys.argv[1:4])
    for error in errors:
        print(f"FAIL: {error}")
    if errors:
        sys.exit(1)
    print("mtls component: certificates, mounts, settings and probes fit together")
