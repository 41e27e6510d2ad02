"""Checks the promises of votemesh's rendered Kubernetes manifests.

Usage: check_manifests.py RENDERED_YAML COMPONENTS_JSON FLAVOUR VERSION [REGISTRY]

RENDERED_YAML is `kubectl kustomize` of k8s/ (FLAVOUR base), of
k8s/overlays/dev (dev) or of k8s/overlays/prod (prod). COMPONENTS_JSON maps
each component (vote, worker, result, gateway) to what its binary really
does, taken from its clap definition by the Rust test: {"env": [names it
reads], "port": listen port, "listen_env": the variable that sets the
listen address, "protocol": "grpc"|"http"}, and for the
gateway "resolve_interval": how often (seconds) its client looks the
upstream names up again; and the vote bot to {"env": [...], "client":
true} (votemesh-loadgen's settings; it serves nothing). VERSION is the
workspace version, the tag CI publishes the images under; REGISTRY
(default ghcr.io/votemesh) is where k8s/components/published-images says
they are.

Every flavour keeps the base's promises (each component's listen address
set to every interface on its port, Postgres reading only its own
ConfigMap db-config, whose database name and user the worker and the
result service share, probes with timeouts that outlast
CPU throttling, resources, security contexts, env names, secrets, policies,
disruption budgets (but in dev) that let a drain evict unready pods, each component
spread over nodes, Redis refusing writes below its memory limit, the
gateway calling vote and result through headless names, generated config,
and, where an overlay includes k8s/components/vote-bot, the bot reading
only loadgen settings, calling the gateway Service and allowed to reach
nothing else);
then
- base: production replica counts and autoscalers, the published images,
  the gateway on a LoadBalancer with NodePort 31000;
- dev: one replica each, no autoscaler, no disruption budget (with one
  replica it blocks every drain), local images, writable root for the app
  containers only, the gateway on NodePort 31000;
- prod: the base's counts and autoscalers, pods spread over zones too,
  the namespace enforcing the restricted Pod Security Standard, an
  HTTPRoute (or, with k8s/components/ingress, an Ingress with a class and
  TLS) reaching every public path of the gateway and none of /metrics,
  /healthz and /readyz, the live results stream with no short request
  timeout, Gateway API fields known (also on the GRPCRoute of
  k8s/components/public-grpc, which reaches only the vote and result
  APIs), TRUSTED_PROXIES without a whole private range, an egress policy
  on every workload letting it reach only what it calls (the components
  also DNS and an OTLP collector), and no Secret in
  the output (db-credentials comes from outside the repository).
Where k8s/components/scale-out is included (the scaled-out flavour, found
by its StatefulSet redis-cluster), the stores differ and so do their
promises: a Redis Cluster of at least 6 nodes, each announcing its stable
name (cluster-announce-hostname, hostname endpoints) on the bus port,
with the base's memory rules, spread over nodes, a PodDisruptionBudget, a
headless Service publishing not-ready nodes, reachable on 6379 by vote,
worker, the formation Job and each other and on 16379 by each other only;
vote and worker on the same REDIS_CLUSTER_NODES (the StatefulSet's pods by
name), QUEUE_SHARDS and REDIS_REPLICA_ACKS (at most the replicas a
primary has), no REDIS_HOST; worker replicas sized to the shards (at most
QUEUE_SHARDS, dividing it) with a PodDisruptionBudget that lets a drain
through; worker and result on the same DB_HOSTS, each the read-write
Service of a rendered CloudNativePG Cluster of at least 2 instances
spread over nodes, no DB_HOST; the Clusters' database and owner the
db-config DB_NAME and DB_USER (not postgres), their bootstrap Secret the
one DB_PASSWORD comes from, its username the owner; the instances
reachable on 5432 by worker, result, their own Cluster's pods and the
operator (from cnpg-system, also on 8000), by nothing else.
Every flavour also gives each component scrape annotations and a headless
`<component>-metrics` Service whose port is named `metrics` (what a
ServiceMonitor selects). Where the observability component is included
(k8s/components/observability: the dev overlay), its workloads keep the
same hardening, Prometheus may scrape every component and scrapes each
one's `-metrics` Service, every component sends traces to the collector
(OTEL_EXPORTER_OTLP_ENDPOINT) and may reach it, Grafana gets the
dashboard, and every image of the stack is pinned to a version.
Prints every broken promise and exits 1 if there is any.
"""

import base64
import ipaddress
import json
import os
import re
import sys

import yaml

REPLICAS = {"vote": 3, "worker": 2, "result": 2, "gateway": 2}
# The scaled-out flavour (k8s/components/scale-out).
REDIS_CLUSTER = "redis-cluster"
REDIS_CLUSTER_CLIENTS = {"vote", "worker", "redis-cluster", "redis-cluster-create"}
REDIS_PORT, REDIS_BUS_PORT = 6379, 16379
CNPG_API = "postgresql.cnpg.io/v1"
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"
# The CloudNativePG operator's pods, as its release manifest labels them.
CNPG_OPERATOR = ("cnpg-system", "cloudnative-pg")
CNPG_OPERATOR_PORTS = (5432, 8000)
AUTOSCALED = {"vote", "gateway"}
# Where CI publishes the images (.github/workflows/images.yml).
REGISTRY = "ghcr.io/votemesh"
# The gateway's NodePort, mapped to the host by k8s/kind/cluster.yaml.
GATEWAY_NODE_PORT = 31000
# The name kustomize's generators give: the name, a dash, a 10-character hash.
GENERATED = r"{}-[a-z0-9]{{10}}"
# A live results stream must outlive this (seconds) at the Ingress.
SSE_MIN_TIMEOUT = 300
# Who may reach each data store and component (NetworkPolicy ingress;
# "*" is anyone).
STORE_CLIENTS = {"postgres": {"worker", "result"}, "redis": {"vote", "worker"}}
COMPONENT_CLIENTS = {"vote": {"gateway"}, "result": {"gateway"}, "worker": set(), "gateway": {"*"}}
# The shortest probe timeout (seconds) a CPU-throttled pod answers within;
# Kubernetes' default is 1 s.
MIN_PROBE_TIMEOUT = 3
# The probe fields Kubernetes defaults when they are left out.
PROBE_DEFAULTS = {"periodSeconds": 10, "timeoutSeconds": 1}
# Redis' maxmemory may use at most this share of its container's memory
# limit: the rest is for client and AOF buffers and an AOF rewrite's
# copy-on-write pages, which maxmemory does not count.
REDIS_MAXMEMORY_SHARE = 0.75
# The gateway's upstream settings and the component each names.
UPSTREAMS = {"VOTE_ADDR": "vote", "RESULT_ADDR": "result"}
# How long (seconds) the cluster DNS may keep answering a headless name
# with a pod that left: the default TTL of CoreDNS' kubernetes plugin, for
# a Corefile that caches with it (kubeadm 1.32+ does not cache the cluster
# domain; older kubeadm Corefiles cache it 30 s, beyond any preStop, and
# there the client's retry on another pod covers the rest).
DNS_CACHE = 5
NAME_LABEL = "app.kubernetes.io/name"
# The observability component's workloads (k8s/components/observability),
# and where the components send their traces when it is included.
OBSERVABILITY = ("otel-collector", "jaeger", "prometheus", "grafana")
OTLP_ENDPOINT = "http://otel-collector:4317"

failures = []


# Where every votemesh object lives, and the kinds that live in none.
NAMESPACE = "votemesh"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}


def fail(message):
    failures.append(message)


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def check_container_basics(owner, pod, container, writable_root=False):
    where = f"{owner}/{container['name']}"
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for key in ("cpu", "memory"):
            if key not in resources.get(part, {}):
                fail(f"{where}: no {part}.{key}")
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        fail(f"{where}: runAsNonRoot is not set")
    if writable_root:
        if sc.get("readOnlyRootFilesystem") is not False:
            fail(f"{where}: readOnlyRootFilesystem is not false (Tilt's live update writes the binary)")
    elif sc.get("readOnlyRootFilesystem") is not True:
        fail(f"{where}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(f"{where}: capabilities are not all dropped")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        fail(f"{where}: seccompProfile is not RuntimeDefault")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if not probe:
            continue
        timeout = probe.get("timeoutSeconds", PROBE_DEFAULTS["timeoutSeconds"])
        period = probe.get("periodSeconds", PROBE_DEFAULTS["periodSeconds"])
        if timeout < MIN_PROBE_TIMEOUT:
            fail(f"{where}: {kind} timeoutSeconds {timeout} is under {MIN_PROBE_TIMEOUT} s: a CPU-throttled pod fails it")
        if timeout > period:
            fail(f"{where}: {kind} timeoutSeconds {timeout} is longer than its periodSeconds {period}")


def selects(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions) selects
    pods labelled `labels`; an empty selector selects every pod."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def check_spread(name, pod, labels, flavour):
    """Each component's pods spread over nodes (zones too in prod), counted
    per component, and only as a preference where a one-node cluster runs
    them."""
    where = f"deployment/{name}"
    constraints = pod.get("topologySpreadConstraints", [])
    keys = [c.get("topologyKey") for c in constraints]
    for key in sorted(set(keys)):
        if keys.count(key) > 1:
            fail(f"{where}: more than one spread over {key}")
    for c in constraints:
        selector = c.get("labelSelector") or {}
        named = set(selector.get("matchLabels") or {}) | {e["key"] for e in selector.get("matchExpressions") or []}
        for key in c.get("matchLabelKeys", []):
            if key in named:
                fail(f"{where}: {key} exists in both matchLabelKeys and labelSelector (the API server rejects it)")
    wanted = ["kubernetes.io/hostname"] + (["topology.kubernetes.io/zone"] if flavour == "prod" else [])
    for key in wanted:
        found = [c for c in constraints if c.get("topologyKey") == key]
        if not found:
            fail(f"{where}: pods are not spread over {key} per component")
            continue
        c = found[0]
        selector = c.get("labelSelector") or {}
        own = (selector.get("matchLabels") or {}).get(NAME_LABEL) == labels.get(NAME_LABEL)
        if not selects(selector, labels) or not (own or NAME_LABEL in c.get("matchLabelKeys", [])):
            fail(f"{where}: pods are not spread over {key} per component: {c}")
        if c.get("whenUnsatisfiable") != "ScheduleAnyway":
            fail(f"{where}: spread over {key} is {c.get('whenUnsatisfiable')}, not ScheduleAnyway (a one-node cluster could not schedule)")


def check_disruption_budget(name, pdb, labels):
    where = f"poddisruptionbudget/{name}"
    spec = pdb.get("spec", {})
    if not selects(spec.get("selector", {}), labels):
        fail(f"{where}: does not select the pods of deployment/{name}")
    policy = spec.get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
    if policy != "AlwaysAllow":
        fail(f"{where}: unhealthyPodEvictionPolicy {policy}, not AlwaysAllow (pods made unready by a dependency's outage would block every node drain)")


def parse_quantity(text):
    """A Kubernetes memory quantity (256Mi, 1G, 134217728) in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text))
    if not match or (match.group(2) and match.group(2) not in units):
        raise ValueError(f"memory quantity {text!r}")
    return int(match.group(1)) * units.get(match.group(2), 1)


def parse_redis_bytes(text):
    """A Redis memory size (180mb, 1gb, 100m, 1048576) in bytes, by Redis'
    rules: k, m, g are powers of 1000; kb, mb, gb powers of 1024."""
    units = {"": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
    match = re.fullmatch(r"(\d+)([a-z]*)", str(text).lower())
    if not match or match.group(2) not in units:
        raise ValueError(f"Redis memory size {text!r}")
    return int(match.group(1)) * units[match.group(2)]


def check_redis_memory(statefulset):
    """A full queue makes Redis refuse writes, below the memory limit at
    which the kernel would kill it."""
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    where = f"statefulset/{statefulset['metadata']['name']}/{container['name']}"
    args = container.get("args", [])
    options = {args[i]: args[i + 1] for i in range(len(args) - 1) if str(args[i]).startswith("--")}
    policy = options.get("--maxmemory-policy")
    if policy != "noeviction":
        fail(f"{where}: maxmemory-policy {policy}, not noeviction (queued votes must be refused, never evicted)")
    limit = container.get("resources", {}).get("limits", {}).get("memory")
    if "--maxmemory" not in options or limit is None:
        fail(f"{where}: no --maxmemory below the container's memory limit ({limit}): a full queue gets Redis OOM-killed")
        return
    maxmemory, limit_bytes = parse_redis_bytes(options["--maxmemory"]), parse_quantity(limit)
    if not 0 < maxmemory <= REDIS_MAXMEMORY_SHARE * limit_bytes:
        fail(
            f"{where}: maxmemory {options['--maxmemory']} is over {REDIS_MAXMEMORY_SHARE:.0%} of the {limit} limit:"
            " it leaves no room for buffers and the AOF rewrite's fork"
        )


def check_database_config(statefulset, objects):
    """Postgres reads its own ConfigMap (db-config) and Secret, never the
    app's settings: an edit to RUST_LOG or OPTION_A must not restart the
    only database pod. The worker and the result service take the database
    name and user from the same ConfigMap Postgres was initialised with."""
    configmaps = by_kind(objects, "ConfigMap")
    deployments = by_kind(objects, "Deployment")
    pod = statefulset["spec"]["template"]["spec"]
    for container in pod.get("containers", []):
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("configMapKeyRef", {}).get("name")
            if ref and not re.fullmatch(GENERATED.format("db-config"), ref):
                fail(f"statefulset/postgres: {entry['name']} comes from {ref}, not db-config: every edit to it rolls the database")
        for ref in container.get("envFrom", []):
            fail(f"statefulset/postgres: envFrom {ref}")
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            fail(f"statefulset/postgres: mounts ConfigMap {volume['configMap'].get('name')}")
    [postgres] = pod["containers"]
    for variable, key in (("POSTGRES_DB", "DB_NAME"), ("POSTGRES_USER", "DB_USER")):
        wanted = env_value(postgres, variable, configmaps)
        for name in ("worker", "result"):
            if name not in deployments:
                continue
            [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
            if env_value(container, key, configmaps) != wanted:
                fail(f"deployment/{name}: {key} is {env_value(container, key, configmaps)!r}, Postgres' {variable} is {wanted!r}")


def env_value(container, name, configmaps):
    """The value a container gets for `name`, directly or from a rendered
    ConfigMap; None if it does not get one."""
    for entry in container.get("env", []):
        if entry["name"] != name:
            continue
        if "value" in entry:
            return entry["value"]
        ref = entry.get("valueFrom", {}).get("configMapKeyRef", {})
        return configmaps.get(ref.get("name"), {}).get("data", {}).get(ref.get("key"))
    return None


def check_upstreams(objects, components):
    """The gateway calls vote and result through headless names that
    resolve to every ready pod, on the pods' own ports, and a pod leaving
    waits in preStop until the gateway has stopped choosing it."""
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    configmaps = by_kind(objects, "ConfigMap")
    gateway = deployments.get("gateway")
    if not gateway or "gateway" not in components:
        return
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    lag = DNS_CACHE + components["gateway"].get("resolve_interval", 0)
    for variable, upstream in UPSTREAMS.items():
        where = f"deployment/gateway: {variable}"
        address = env_value(container, variable, configmaps)
        match = re.fullmatch(r"http://([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)/?", address or "")
        if not match:
            fail(f"{where} {address!r} is not http://<service>:<port>")
            continue
        name, port = match.group(1), int(match.group(3))
        service = services.get(name, {}).get("spec", {})
        pods = deployments.get(upstream, {}).get("spec", {}).get("template", {})
        labels = pods.get("metadata", {}).get("labels", {})
        if service.get("clusterIP") != "None":
            fail(f"{where} names service/{name}, which is not headless: every call would go to one {upstream} pod per connection")
        elif not service.get("selector") or not selects({"matchLabels": service["selector"]}, labels) or service["selector"].get(NAME_LABEL) != upstream:
            fail(f"{where} names service/{name}, which does not select the {upstream} pods")
        elif service.get("publishNotReadyAddresses"):
            fail(f"{where} names service/{name}, which publishes pods that are not ready")
        if port != components[upstream]["port"]:
            fail(f"{where} calls port {port}; a headless name does not translate ports and {upstream} listens on {components[upstream]['port']}")
        if upstream in deployments:
            pod_container = deployments[upstream]["spec"]["template"]["spec"]["containers"][0]
            pre_stop = pod_container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
            if pre_stop < lag:
                fail(
                    f"deployment/{upstream}: preStop {pre_stop} s is shorter than the {lag} s the gateway may still choose"
                    f" a leaving pod (DNS cache {DNS_CACHE} s + lookup every {lag - DNS_CACHE} s)"
                )


def split_list(value):
    return [entry.strip() for entry in (value or "").split(",") if entry.strip()]


def pod_clients(policies, labels, port):
    """Who the NetworkPolicies let reach pods labelled `labels` on `port`:
    a component's name, `cnpg:<cluster>` for a CloudNativePG Cluster's pods,
    `<namespace>/<name>` for pods of another namespace, "*" for anyone."""
    clients = set()
    for policy in policies.values():
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p.get("port") for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            for source in rule.get("from") or [{}]:
                selector = (source.get("podSelector") or {}).get("matchLabels", {})
                namespace = (source.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                if "ipBlock" in source or (not selector and not namespace):
                    clients.add("*")
                elif CNPG_CLUSTER_LABEL in selector and not namespace:
                    clients.add(f"cnpg:{selector[CNPG_CLUSTER_LABEL]}")
                elif namespace:
                    clients.add(f"{namespace}/{selector.get(NAME_LABEL, '*')}")
                else:
                    clients.add(selector.get(NAME_LABEL, "*"))
    return clients


def check_evictable(name, pdb, replicas):
    """A budget that selects the workload's pods, lets a drain evict unready
    ones, and lets at least one go."""
    spec = pdb.get("spec", {})
    check_disruption_budget(name, pdb, {NAME_LABEL: name})
    if "maxUnavailable" in spec:
        blocks = spec["maxUnavailable"] in (0, "0", "0%")
    else:
        blocks = not isinstance(spec.get("minAvailable"), int) or spec["minAvailable"] >= (replicas or 1)
    if blocks:
        fail(f"poddisruptionbudget/{name}: lets no pod of {replicas} go: every kubectl drain blocks")


def check_scaled_out(objects, flavour):
    """The scaled-out flavour's promises (see the module doc)."""
    statefulsets = by_kind(objects, "StatefulSet")
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    configmaps = by_kind(objects, "ConfigMap")
    secrets = by_kind(objects, "Secret")
    policies = by_kind(objects, "NetworkPolicy")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    for name in ("redis", "postgres"):
        if name in statefulsets:
            fail(f"statefulset/{name}: the single store is still rendered beside the scaled-out ones")

    # The Redis Cluster.
    redis = statefulsets[REDIS_CLUSTER]
    where = f"statefulset/{REDIS_CLUSTER}"
    spec = redis["spec"]
    nodes = spec.get("replicas") or 0
    if nodes < 6:
        fail(f"{where}: {nodes} nodes; a Redis Cluster with a replica for each of 3 primaries needs 6")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    [container] = pod["containers"]
    check_redis_memory(redis)
    args = [str(a) for a in container.get("args", [])]
    options = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--")}
    governing = spec.get("serviceName")
    wanted = {
        "--cluster-enabled": "yes",
        "--cluster-announce-hostname": f"$(POD_NAME).{governing}",
        "--cluster-preferred-endpoint-type": "hostname",
    }
    for option, value in wanted.items():
        if options.get(option) != value:
            fail(f"{where}: {option} is {options.get(option)!r}, not {value!r}: clients must be sent to names that outlive a pod's address")
    pod_name = next((e for e in container.get("env", []) if e["name"] == "POD_NAME"), {})
    if pod_name.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
        fail(f"{where}: POD_NAME is not the pod's name")
    ports = {p["containerPort"] for p in container.get("ports", [])}
    bus = int(options.get("--cluster-port", REDIS_PORT + 10000))
    if ports != {REDIS_PORT, REDIS_BUS_PORT} or bus != REDIS_BUS_PORT:
        fail(f"{where}: container ports {sorted(ports)}, cluster bus {bus}: expected {REDIS_PORT} and the bus on {REDIS_BUS_PORT}")
    service = services.get(governing, {}).get("spec", {})
    if service.get("clusterIP") != "None" or not selects({"matchLabels": service.get("selector") or {"-": "-"}}, labels):
        fail(f"service/{governing}: the nodes' governing Service is missing, not headless or not selecting them")
    elif not service.get("publishNotReadyAddresses"):
        fail(f"service/{governing}: does not publish not-ready nodes: they cannot find each other before the cluster forms")
    check_spread(REDIS_CLUSTER, pod, labels, flavour)
    if REDIS_CLUSTER not in pdbs:
        fail(f"{where}: no PodDisruptionBudget")
    else:
        check_evictable(REDIS_CLUSTER, pdbs[REDIS_CLUSTER], nodes)
    node_labels = {NAME_LABEL: REDIS_CLUSTER}
    for port, expected in ((REDIS_PORT, REDIS_CLUSTER_CLIENTS), (REDIS_BUS_PORT, {REDIS_CLUSTER})):
        clients = pod_clients(policies, node_labels, port)
        if clients != expected:
            fail(f"{REDIS_CLUSTER} is reachable on port {port} from {sorted(clients)}, expected only {sorted(expected)}")
    names = [f"{REDIS_CLUSTER}-{i}.{governing}:{REDIS_PORT}" for i in range(nodes)]

    # The queue's clients.
    settings = {}
    for name in ("vote", "worker"):
        if name not in deployments:
            continue
        [client] = deployments[name]["spec"]["template"]["spec"]["containers"]
        for variable in ("REDIS_HOST", "REDIS_PORT"):
            if any(e["name"] == variable for e in client.get("env", [])):
                fail(f"deployment/{name}: sets {variable}, which REDIS_CLUSTER_NODES overrides")
        values = {v: env_value(client, v, configmaps) for v in ("REDIS_CLUSTER_NODES", "QUEUE_SHARDS", "REDIS_REPLICA_ACKS")}
        settings[name] = values
        seeds = split_list(values["REDIS_CLUSTER_NODES"])
        if not seeds or not set(seeds) <= set(names):
            fail(f"deployment/{name}: REDIS_CLUSTER_NODES {values['REDIS_CLUSTER_NODES']!r} is not a list of the nodes' stable names ({names[0]}, ...)")
    if len({json.dumps(v, sort_keys=True) for v in settings.values()}) > 1:
        fail(f"vote and worker disagree on the queue: {settings}")
    worker = settings.get("worker", {})
    try:
        shards = int(worker.get("QUEUE_SHARDS") or 0)
        acks = int(worker.get("REDIS_REPLICA_ACKS") or 0)
    except ValueError:
        shards, acks = 0, 0
    if shards < 1:
        fail(f"deployment/worker: QUEUE_SHARDS {worker.get('QUEUE_SHARDS')!r} is not a shard count")
    if not 1 <= acks <= nodes // 3 - 1:
        fail(f"REDIS_REPLICA_ACKS {acks}: each primary has {nodes // 3 - 1} replica(s); a push must wait for one, and for no more than there are")
    if "worker" in deployments:
        workers = deployments["worker"]["spec"].get("replicas") or 1
        if shards and (workers < 2 or workers > shards or shards % workers):
            fail(f"deployment/worker: {workers} replicas for {shards} shards: expected several, at most one a shard, each taking as many")
        if "worker" not in pdbs:
            fail("deployment/worker: no PodDisruptionBudget")
        else:
            check_evictable("worker", pdbs["worker"], workers)

    # The databases.
    clusters = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Cluster" and o["apiVersion"] == CNPG_API}
    if not clusters:
        fail("no CloudNativePG Cluster")
    hosts = {}
    for name in ("worker", "result"):
        if name not in deployments:
            continue
        [client] = deployments[name]["spec"]["template"]["spec"]["containers"]
        for variable in ("DB_HOST", "DATABASE_URL"):
            if any(e["name"] == variable for e in client.get("env", [])):
                fail(f"deployment/{name}: sets {variable} beside DB_HOSTS: the binary refuses to start")
        hosts[name] = env_value(client, "DB_HOSTS", configmaps)
        entries = split_list(hosts[name])
        named = [h.rpartition(":")[0] if ":" in h else h for h in entries]
        if len(entries) < 2 or any(not h.endswith("-rw") or h[: -len("-rw")] not in clusters for h in named):
            fail(f"deployment/{name}: DB_HOSTS {hosts[name]!r} is not the read-write Services (<cluster>-rw) of several rendered Clusters {sorted(clusters)}")
        if len(set(named)) != len(named):
            fail(f"deployment/{name}: DB_HOSTS {hosts[name]!r} names a database twice")
        db_name, db_user = env_value(client, "DB_NAME", configmaps), env_value(client, "DB_USER", configmaps)
        password = next((e.get("valueFrom", {}).get("secretKeyRef", {}) for e in client.get("env", []) if e["name"] == "DB_PASSWORD"), {})
        if db_user == "postgres":
            fail(f"deployment/{name}: DB_USER postgres: CloudNativePG's application owner cannot be the superuser")
        for cluster_name, cluster in clusters.items():
            initdb = cluster.get("spec", {}).get("bootstrap", {}).get("initdb", {})
            if (initdb.get("database"), initdb.get("owner")) != (db_name, db_user):
                fail(f"cluster/{cluster_name}: database {initdb.get('database')!r} owned by {initdb.get('owner')!r}, deployment/{name} connects to {db_name!r} as {db_user!r}")
            secret = initdb.get("secret", {}).get("name")
            if password.get("name") != secret or password.get("key") != "password":
                fail(f"cluster/{cluster_name}: the owner's password comes from Secret {secret}, deployment/{name}'s DB_PASSWORD from {password}")
    if len(set(hosts.values())) > 1:
        fail(f"worker and result disagree on DB_HOSTS (the shards' databases, in order): {hosts}")
    for cluster_name, cluster in clusters.items():
        where = f"cluster/{cluster_name}"
        cspec = cluster.get("spec", {})
        if (cspec.get("instances") or 1) < 2:
            fail(f"{where}: {cspec.get('instances')} instance(s): no replica to fail over to")
        affinity = cspec.get("affinity", {})
        if affinity.get("enablePodAntiAffinity") is False or affinity.get("topologyKey", "kubernetes.io/hostname") != "kubernetes.io/hostname" or affinity.get("podAntiAffinityType", "preferred") != "preferred":
            fail(f"{where}: instances not spread over nodes as a preference: {affinity}")
        for part in ("requests", "limits"):
            for key in ("cpu", "memory"):
                if key not in cspec.get("resources", {}).get(part, {}):
                    fail(f"{where}: no {part}.{key}")
        if not cspec.get("storage", {}).get("size"):
            fail(f"{where}: no storage size")
        secret = secrets.get(cspec.get("bootstrap", {}).get("initdb", {}).get("secret", {}).get("name"))
        if secret is not None:
            username = base64.b64decode(secret.get("data", {}).get("username", "")).decode() or secret.get("stringData", {}).get("username")
            if username != cspec["bootstrap"]["initdb"].get("owner"):
                fail(f"{where}: its bootstrap Secret's username {username!r} is not the owner {cspec['bootstrap']['initdb'].get('owner')!r}")
        instance = {CNPG_CLUSTER_LABEL: cluster_name, "cnpg.io/podRole": "instance", NAME_LABEL: "postgresql"}
        operator = "/".join(CNPG_OPERATOR)
        expected = {5432: {"worker", "result", f"cnpg:{cluster_name}", operator}, 8000: {f"cnpg:{cluster_name}", operator}}
        for port, wanted_clients in expected.items():
            clients = pod_clients(policies, instance, port)
            if clients != wanted_clients:
                fail(f"{where}: its instances are reachable on port {port} from {sorted(clients)}, expected only {sorted(wanted_clients)}")


def check_service_account(owner, pod, accounts):
    name = pod.get("serviceAccountName")
    if name != owner:
        fail(f"{owner}: runs as service account {name!r}, not its own")
    elif accounts.get(name, {}).get("automountServiceAccountToken") is not False:
        fail(f"{owner}: service account {name} mounts its token")
    if pod.get("automountServiceAccountToken") is not False:
        fail(f"{owner}: pod mounts a service account token")


def check_component(name, spec, deployment, flavour, version, registry, scaled_out=False):
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    where = f"deployment/{name}"
    expected_image = f"votemesh-{name}:dev" if flavour == "dev" else f"{registry}/votemesh-{name}:{version}"
    if container["image"] != expected_image:
        fail(f"{where}: image {container['image']} is not {expected_image}")
    replicas = deployment["spec"].get("replicas")
    if scaled_out and name == "worker":
        pass  # sized to the shards: check_scaled_out
    elif flavour == "dev":
        if replicas != 1:
            fail(f"{where}: {replicas} replicas, expected 1 on a laptop")
    elif name in AUTOSCALED:
        if replicas is not None:
            fail(f"{where}: sets replicas although its HorizontalPodAutoscaler owns them")
    elif replicas != REPLICAS[name]:
        fail(f"{where}: {replicas} replicas, expected {REPLICAS[name]}")
    check_spread(name, pod, deployment["spec"]["template"]["metadata"].get("labels", {}), flavour)
    ports = [p["containerPort"] for p in container.get("ports", [])]
    wanted_ports = [spec["port"]] + ([spec["admin_port"]] if "admin_port" in spec else [])
    if ports != wanted_ports:
        fail(f"{where}: container ports {ports}, the binary listens on {wanted_ports}")
    # The listen address is set, on every interface, never left to the
    # binary's default (which may be loopback or change between releases).
    listen = next((e.get("value") for e in container.get("env", []) if e["name"] == spec["listen_env"]), None)
    # [::] (dual-stack): 0.0.0.0 would leave IPv6-only clusters' probes unanswered.
    if listen != f"[::]:{spec['port']}":
        fail(f"{where}: {spec['listen_env']} is {listen!r}, not every interface, IPv6 and IPv4, on its port ([::]:{spec['port']})")
    if "admin_port" in spec:
        admin = next((e.get("value") for e in container.get("env", []) if e["name"] == spec["admin_env"]), None)
        if admin != f"[::]:{spec['admin_port']}":
            fail(f"{where}: {spec['admin_env']} is {admin!r}, not every interface on its admin port {spec['admin_port']}")

    env_names = [e["name"] for e in container.get("env", [])]
    if container.get("envFrom"):
        fail(f"{where}: envFrom hides which variables it gets; list them")
    unknown = sorted(set(env_names) - set(spec["env"]))
    if unknown:
        fail(f"{where}: sets {unknown}, which votemesh-{name} does not read")
    for entry in container.get("env", []):
        if entry["name"] == "DB_PASSWORD" and "secretKeyRef" not in entry.get("valueFrom", {}):
            fail(f"{where}: DB_PASSWORD does not come from a Secret")

    probes = {k: container.get(k) for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for kind, probe in probes.items():
        if not probe:
            fail(f"{where}: no {kind}")
    if spec["protocol"] == "grpc":
        live, ready, start = probes["livenessProbe"] or {}, probes["readinessProbe"] or {}, probes["startupProbe"] or {}
        if live.get("grpc") != {"port": spec["port"], "service": "liveness"}:
            fail(f"{where}: liveness is not grpc {{port: {spec['port']}, service: liveness}}: {live}")
        if ready.get("grpc", {}).get("port") != spec["port"] or ready["grpc"].get("service", "") != "":
            fail(f"{where}: readiness is not grpc {{port: {spec['port']}}}: {ready}")
        if start.get("grpc", {}).get("port") != spec["port"]:
            fail(f"{where}: startup probe is not gRPC on {spec['port']}: {start}")
    else:
        # On the operators' port where there is one.
        probe_port = spec.get("admin_port", spec["port"])
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            http = (probes[kind] or {}).get("httpGet", {})
            if http.get("path") != path:
                fail(f"{where}: {kind} is not GET {path}: {probes[kind]}")
            elif named.get(http.get("port"), http.get("port")) != probe_port:
                fail(f"{where}: {kind} asks port {http.get('port')}, not the operators' port {probe_port}")

    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    if grace < pre_stop + 15:
        fail(f"{where}: terminationGracePeriodSeconds {grace} leaves under 15 s to drain after a {pre_stop} s preStop")


def check_bots(objects, bots, components):
    """The vote bot (k8s/components/vote-bot), where an overlay includes it:
    it reads only settings votemesh-loadgen has, calls the gateway by its
    Service on the gateway's port, serves nothing, and a NetworkPolicy lets
    it reach only the gateway's port (and DNS)."""
    deployments = by_kind(objects, "Deployment")
    policies = by_kind(objects, "NetworkPolicy")
    gateway_port = components["gateway"]["port"]
    for name, spec in bots.items():
        deployment = deployments.get(name)
        if deployment is None:
            continue
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        for entry in container.get("env", []):
            if entry["name"] not in spec["env"]:
                fail(f"{name}: sets {entry['name']}, which votemesh-loadgen does not read")
        url = next((e.get("value") for e in container.get("env", []) if e["name"] == "GATEWAY_URL"), None)
        if url != f"http://gateway:{gateway_port}":
            fail(f"{name}: GATEWAY_URL {url!r} is not the gateway Service on its port (http://gateway:{gateway_port})")
        if container.get("ports"):
            fail(f"{name}: serves nothing, yet declares ports {container['ports']}")
        labels = deployment["spec"]["template"]["metadata"].get("labels", {})
        egress = [
            p for p in policies.values()
            if selects(p["spec"].get("podSelector", {}), labels) and "Egress" in p["spec"].get("policyTypes", [])
        ]
        if not egress:
            fail(f"{name}: no NetworkPolicy limits where it may connect")
        reaches_gateway = False
        for policy in egress:
            for rule in policy["spec"].get("egress", []):
                ports = [p.get("port") for p in rule.get("ports", [])]
                if ports and all(port == 53 for port in ports):
                    continue
                to_gateway = rule.get("to") and all(
                    peer.get("podSelector", {}).get("matchLabels") == {NAME_LABEL: "gateway"} and "namespaceSelector" not in peer
                    for peer in rule["to"]
                )
                if to_gateway and ports == [gateway_port]:
                    reaches_gateway = True
                else:
                    fail(f"{name}: NetworkPolicy {policy['metadata']['name']} lets it reach {rule.get('to')} on {ports}, beyond the gateway's port {gateway_port} and DNS")
        if egress and not reaches_gateway:
            fail(f"{name}: its NetworkPolicy does not let it reach the gateway on port {gateway_port}")


def check_generated_config(objects, flavour):
    """app-config (and, but in prod, db-credentials) carry a content hash in
    their names, and the pods refer to exactly the objects rendered."""
    configmaps = set(by_kind(objects, "ConfigMap"))
    secrets = set(by_kind(objects, "Secret"))
    names = {"ConfigMap": configmaps, "Secret": secrets}
    expected = [("ConfigMap", "app-config"), ("ConfigMap", "db-config")] + ([] if flavour == "prod" else [("Secret", "db-credentials")])
    for kind, name in expected:
        if not any(re.fullmatch(GENERATED.format(name), n) for n in names[kind]):
            fail(f"{kind.lower()} {name}: not generated with a content hash ({sorted(names[kind])})")
    if flavour == "prod" and secrets:
        fail(f"prod renders Secrets {sorted(secrets)}: the password must not come from the repository")
    for workload in list(by_kind(objects, "Deployment").values()) + list(by_kind(objects, "StatefulSet").values()):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                source = entry.get("valueFrom", {})
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = source.get(key, {}).get("name")
                    if ref is None:
                        continue
                    external = kind == "Secret" and flavour == "prod" and ref == "db-credentials"
                    if ref not in names[kind] and not external:
                        fail(f"{workload['metadata']['name']}: {entry['name']} refers to {kind} {ref}, which is not rendered")


# The gateway's public paths (an example of each) and those only operators
# may reach; a public route must reach the first and none of the second.
PUBLIC_PATHS = ("/", "/vote", "/results", "/api/vote", "/api/results", "/api/results/stream", "/api/options", "/static/app.js")
OPERATOR_PATHS = ("/metrics", "/healthz", "/readyz")
SSE_PATH = "/api/results/stream"
# Gateway API v1 fields votemesh uses or may (kubernetes-validate has no
# schema for them: a misspelt field would be dropped by a lenient apply).
ROUTE_SPEC_FIELDS = {"parentRefs", "hostnames", "rules"}
PARENT_REF_FIELDS = {"group", "kind", "namespace", "name", "sectionName", "port"}
HTTP_RULE_FIELDS = {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"}
HTTP_MATCH_FIELDS = {"path", "headers", "queryParams", "method"}
GRPC_RULE_FIELDS = {"name", "matches", "filters", "backendRefs", "sessionPersistence"}
GRPC_MATCH_FIELDS = {"method", "headers"}
BACKEND_FIELDS = {"group", "kind", "name", "namespace", "port", "weight", "filters"}
TIMEOUT_FIELDS = {"request", "backendRequest"}
GATEWAY_API = "gateway.networking.k8s.io/v1"
# Ranges a proxy list must never trust whole: every pod and node in them
# could then name its own client address.
BLANKET_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "0.0.0.0/0", "::/0")


def path_matches(kind, value, path):
    """Whether a route's path match (Gateway API Exact/PathPrefix, Ingress
    Exact/Prefix: prefixes match whole path elements) covers `path`."""
    if kind == "Exact":
        return path == value
    if kind in ("PathPrefix", "Prefix"):
        prefix = value.rstrip("/")
        return prefix == "" or path == prefix or path.startswith(prefix + "/")
    return True  # RegularExpression, ImplementationSpecific: assume the worst


def gateway_duration(text):
    """A Gateway API duration (GEP-2257: 1h, 30s, 1h30m, 500ms) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"duration {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def check_route_fields(where, spec, rule_fields, match_fields):
    for key, allowed in (("spec", ROUTE_SPEC_FIELDS),):
        extra = set(spec) - allowed
        if extra:
            fail(f"{where}: unknown fields {sorted(extra)} in {key}")
    if not spec.get("parentRefs"):
        fail(f"{where}: no parentRefs: it attaches to no Gateway")
    for ref in spec.get("parentRefs", []):
        if set(ref) - PARENT_REF_FIELDS or not ref.get("name"):
            fail(f"{where}: parentRef {ref} has unknown fields or no name")
    for rule in spec.get("rules", []):
        if set(rule) - rule_fields:
            fail(f"{where}: unknown fields {sorted(set(rule) - rule_fields)} in a rule")
        for match in rule.get("matches", []):
            if set(match) - match_fields:
                fail(f"{where}: unknown fields {sorted(set(match) - match_fields)} in a match")
        for backend in rule.get("backendRefs", []):
            if set(backend) - BACKEND_FIELDS:
                fail(f"{where}: unknown fields {sorted(set(backend) - BACKEND_FIELDS)} in a backendRef")
        if set(rule.get("timeouts") or {}) - TIMEOUT_FIELDS:
            fail(f"{where}: unknown fields {sorted(set(rule['timeouts']) - TIMEOUT_FIELDS)} in timeouts")
    for value in [r.get("name", "") for r in spec.get("parentRefs", [])] + spec.get("hostnames", []):
        if re.fullmatch(r"[A-Z-]+", str(value)):
            fail(f"{where}: placeholder {value} left (edge.env's replacements did not reach it)")


def check_public_routes(objects, services, components=None):
    """The public entry (HTTPRoute, or an Ingress): the gateway's public
    paths and nothing an operator alone should see; the live results
    stream without a short timeout; a class and TLS on an Ingress."""
    routes = by_kind(objects, "HTTPRoute")
    ingresses = by_kind(objects, "Ingress")
    # (where, path kind, path value, rule) for every path that reaches the gateway
    entries = []
    for name, route in routes.items():
        where = f"httproute/{name}"
        if route["apiVersion"] != GATEWAY_API:
            fail(f"{where}: apiVersion {route['apiVersion']}, not {GATEWAY_API}")
        spec = route.get("spec", {})
        check_route_fields(where, spec, HTTP_RULE_FIELDS, HTTP_MATCH_FIELDS)
        if not spec.get("hostnames"):
            fail(f"{where}: no hostnames: it answers for every host name of the Gateway")
        for rule in spec.get("rules", []):
            if not any(b.get("name") == "gateway" for b in rule.get("backendRefs", [])):
                continue
            for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
                path = match.get("path") or {"type": "PathPrefix", "value": "/"}
                entries.append((where, path.get("type", "PathPrefix"), path.get("value", "/"), rule))
    for name, ingress in ingresses.items():
        where = f"ingress/{name}"
        spec = ingress.get("spec", {})
        if not spec.get("ingressClassName"):
            fail(f"{where}: no ingressClassName: a controller installed with its chart's defaults ignores it, and it never gets an address")
        tls_hosts = {h for t in spec.get("tls", []) for h in t.get("hosts", [])}
        for rule in spec.get("rules", []):
            if rule.get("host") not in tls_hosts:
                fail(f"{where}: host {rule.get('host')!r} has no TLS")
            for path in rule.get("http", {}).get("paths", []):
                if path.get("backend", {}).get("service", {}).get("name") == "gateway":
                    entries.append((where, path.get("pathType"), path.get("path", "/"), None))
        if spec.get("defaultBackend"):
            fail(f"{where}: a defaultBackend reaches every path")
    if not entries:
        fail("prod: no HTTPRoute or Ingress routes to service/gateway")
        return
    admin = (components or {}).get("gateway", {}).get("admin_port")
    gateway_ports = services.get("gateway", {}).get("spec", {}).get("ports", [])
    for port in gateway_ports:
        if admin is not None and port.get("targetPort") in ("admin", admin):
            fail(f"service/gateway: port {port.get('port')} reaches the gateway's admin port: a public route could reach /metrics")
    for path in OPERATOR_PATHS:
        for where, kind, value, _ in entries:
            if path_matches(kind, value, path):
                fail(f"{where}: {kind} {value} makes the operators' {path} public")
    for path in PUBLIC_PATHS:
        if not any(path_matches(kind, value, path) for _, kind, value, _ in entries):
            fail(f"prod: no public route reaches the gateway's {path}")
    # The rule that serves the stream (an Exact match wins over prefixes,
    # the longest prefix over shorter ones).
    serving = sorted(
        ((kind == "Exact", len(value), where, rule) for where, kind, value, rule in entries if path_matches(kind, value, SSE_PATH)),
        key=lambda e: e[:2],
        reverse=True,
    )
    if serving and serving[0][3] is not None:
        where, rule = serving[0][2], serving[0][3]
        timeout = (rule.get("timeouts") or {}).get("request")
        if timeout is None:
            fail(f"{where}: the rule for {SSE_PATH} leaves the request timeout to the implementation (Envoy's is 15 s): it cuts the live results stream")
        else:
            seconds = gateway_duration(timeout)
            if 0 < seconds < SSE_MIN_TIMEOUT:
                fail(f"{where}: request timeout {timeout} cuts the live results stream")
    for name, route in by_kind(objects, "GRPCRoute").items():
        where = f"grpcroute/{name}"
        spec = route.get("spec", {})
        check_route_fields(where, spec, GRPC_RULE_FIELDS, GRPC_MATCH_FIELDS)
        for rule in spec.get("rules", []):
            services_named = {m.get("method", {}).get("service") for m in rule.get("matches", [])}
            if not rule.get("matches") or None in services_named or not services_named <= {"votemesh.v1.VoteService", "votemesh.v1.ResultService"}:
                fail(f"{where}: a rule reaches more than the vote and result APIs: {rule.get('matches')}")
            for backend in rule.get("backendRefs", []):
                ports = [p for p in services.get(backend.get("name"), {}).get("spec", {}).get("ports", []) if p.get("port") == backend.get("port")]
                if not ports or ports[0].get("appProtocol") not in ("kubernetes.io/h2c", "https"):
                    fail(f"{where}: backend {backend} is not a gRPC Service port")


# Where each workload may connect in prod (k8s/components/egress), beside
# DNS (components only) and an OTLP collector on 4317 (components only).
EGRESS = {
    "vote": {("redis", 6379)},
    "worker": {("redis", 6379), ("postgres", 5432)},
    "result": {("postgres", 5432)},
    "gateway": {("vote", 5000), ("result", 5001)},
    "redis": set(),
    "postgres": set(),
}
DNS_PORTS = {53, 5353}
OTLP_PORT = 4317


def check_egress(objects):
    """Prod: every workload is held by an egress policy that lets it reach
    exactly what it calls (and, for the components, DNS and a collector)."""
    policies = by_kind(objects, "NetworkPolicy")
    workloads = {**by_kind(objects, "StatefulSet"), **by_kind(objects, "Deployment")}
    for name, wanted in EGRESS.items():
        if name not in workloads:
            continue
        labels = workloads[name]["spec"]["template"]["metadata"].get("labels", {})
        egress = [p for p in policies.values() if "Egress" in p["spec"].get("policyTypes", []) and selects(p["spec"].get("podSelector", {}), labels)]
        if not egress:
            fail(f"{name}: no egress NetworkPolicy: it may connect anywhere")
            continue
        reached, dns = set(), False
        for policy in egress:
            for rule in policy["spec"].get("egress", []):
                ports = {p.get("port") for p in rule.get("ports", [])}
                peers = rule.get("to") or []
                where = f"{name}: NetworkPolicy {policy['metadata']['name']}"
                if ports and ports <= DNS_PORTS and peers:
                    dns = True
                    continue
                if ports == {OTLP_PORT} and peers and all((p.get("podSelector") or {}).get("matchLabels") == {NAME_LABEL: "otel-collector"} for p in peers) and name in components_of(EGRESS):
                    continue
                for peer in peers or [{}]:
                    target = (peer.get("podSelector") or {}).get("matchLabels", {}).get(NAME_LABEL)
                    if target is None or "namespaceSelector" in peer or "ipBlock" in peer or not ports:
                        fail(f"{where} lets it reach {peer or 'anywhere'} on {sorted(ports) or 'every port'}")
                        continue
                    for port in ports:
                        if (target, port) in wanted:
                            reached.add((target, port))
                        else:
                            fail(f"{where} lets it reach {target} on {port}, which it does not call")
        for target, port in sorted(wanted - reached):
            fail(f"{name}: its egress policies do not let it reach {target} on {port}")
        if name in components_of(EGRESS) and not dns:
            fail(f"{name}: its egress policies do not let it ask the cluster DNS")


def components_of(egress):
    return {"vote", "worker", "result", "gateway"} & set(egress)


def check_trusted_proxies(objects):
    """The gateway believes X-Forwarded-For only from the proxies the
    operator names, never a whole private range."""
    gateway = by_kind(objects, "Deployment").get("gateway")
    if not gateway:
        return
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    value = env_value(container, "TRUSTED_PROXIES", {}) or ""
    for entry in filter(None, (e.strip() for e in value.split(","))):
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            fail(f"deployment/gateway: TRUSTED_PROXIES entry {entry!r} is not an address or range")
            continue
        for blanket in map(ipaddress.ip_network, BLANKET_RANGES):
            if net.version == blanket.version and blanket.subnet_of(net):
                fail(f"deployment/gateway: TRUSTED_PROXIES trusts all of {blanket} ({entry}): name your proxies, not the private ranges")


def check_exposure(objects, flavour, components=None):
    """How the gateway is reached from outside the cluster."""
    services = by_kind(objects, "Service")
    gateway = services.get("gateway", {}).get("spec", {})
    ports = gateway.get("ports", [])
    if flavour == "prod":
        if gateway.get("type", "ClusterIP") != "ClusterIP":
            fail(f"service/gateway: {gateway.get('type')} in prod, expected ClusterIP behind the Gateway or Ingress")
        check_public_routes(objects, services, components)
        check_trusted_proxies(objects)
        check_egress(objects)
        if "grafana" in by_kind(objects, "Deployment"):
            fail("prod: includes the observability component, whose Grafana is dev only (anonymous viewing, admin/admin)")
        namespace = by_kind(objects, "Namespace").get("votemesh", {})
        labels = namespace.get("metadata", {}).get("labels", {})
        if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
            fail("namespace/votemesh: does not enforce the restricted Pod Security Standard")
    else:
        expected = "LoadBalancer" if flavour == "base" else "NodePort"
        if gateway.get("type") != expected or [p.get("nodePort") for p in ports] != [GATEWAY_NODE_PORT]:
            fail(f"service/gateway: not a {expected} with NodePort {GATEWAY_NODE_PORT}: {gateway}")


def check_secrets_stay_secret(objects):
    values = set()
    for secret in by_kind(objects, "Secret").values():
        # A basic-auth username (CloudNativePG's initdb Secret) is no secret.
        values.update(v for k, v in secret.get("stringData", {}).items() if v and k != "username")
        values.update(base64.b64decode(v).decode() for k, v in secret.get("data", {}).items() if v and k != "username")
    for obj in objects:
        if obj["kind"] in ("ConfigMap", "Deployment", "StatefulSet"):
            text = yaml.safe_dump(obj)
            for value in values:
                if value in text:
                    fail(f"{obj['kind'].lower()}/{obj['metadata']['name']}: holds a Secret value")


def allowed_clients(policies, target, port=None):
    """The component names allowed to reach pods named `target` (on `port`,
    if given; "*" is anyone)."""
    clients = set()
    for policy in policies.values():
        if not selects(policy["spec"]["podSelector"], {NAME_LABEL: target}):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = [p.get("port") for p in rule.get("ports", [])]
            if port is not None and ports and port not in ports:
                continue
            sources = rule.get("from")
            if not sources:
                clients.add("*")
            for source in sources or []:
                name = source.get("podSelector", {}).get("matchLabels", {}).get(NAME_LABEL)
                namespace = (source.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                if name is None and namespace:
                    # Every pod of one other namespace (a Gateway's proxies).
                    clients.add(f"namespace:{namespace}")
                else:
                    clients.add(name or "*")
    return clients


# What each kind of component port is, in every Service that reaches it.
APP_PROTOCOL = {"grpc": "kubernetes.io/h2c", "http": "http"}


def check_app_protocols(objects):
    """Every Service port that reaches the same container port of the same
    pods declares the same appProtocol: a mesh (Istio, Linkerd) or a
    Gateway keys the protocol on the pod's port, and two answers make it
    pick one, or refuse."""
    deployments = by_kind(objects, "Deployment")
    declared = {}
    for name, service in by_kind(objects, "Service").items():
        selector = service["spec"].get("selector") or {}
        for owner, deployment in deployments.items():
            template = deployment["spec"]["template"]
            if not selector or not selects({"matchLabels": selector}, template["metadata"].get("labels", {})):
                continue
            container_ports = {p.get("name"): p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            for port in service["spec"].get("ports", []):
                target = port.get("targetPort", port.get("port"))
                number = container_ports.get(target, target)
                declared.setdefault((owner, number), {}).setdefault(port.get("appProtocol"), []).append(f"service/{name}")
    for (owner, number), protocols in sorted(declared.items(), key=str):
        if len(protocols) > 1:
            fail(f"deployment/{owner} port {number}: Services disagree on its appProtocol: {protocols}")


def check_metrics(objects, components):
    """Each component's pods say where their metrics are (the prometheus.io
    annotations) and are selected, ready or not, by a headless Service
    `<component>-metrics` whose port `metrics` is the port the binary
    listens on, spoken as HTTP/1.1."""
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    for name, spec in components.items():
        template = deployments.get(name, {}).get("spec", {}).get("template", {})
        notes = template.get("metadata", {}).get("annotations", {})
        metrics_port = spec.get("admin_port", spec["port"])
        wanted = {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port), "prometheus.io/path": "/metrics"}
        for key, value in wanted.items():
            if notes.get(key) != value:
                fail(f"deployment/{name}: pod annotation {key} is {notes.get(key)!r}, not {value!r}")
        service = services.get(f"{name}-metrics", {}).get("spec", {})
        labels = template.get("metadata", {}).get("labels", {})
        ports = [p for p in service.get("ports", []) if p.get("name") == "metrics"]
        if not service or service.get("clusterIP") != "None" or not selects({"matchLabels": service.get("selector") or {"-": "-"}}, labels):
            fail(f"service/{name}-metrics: missing, not headless, or not selecting the {name} pods")
        elif not service.get("publishNotReadyAddresses"):
            fail(f"service/{name}-metrics: leaves out pods that are not ready, the ones whose metrics matter most")
        elif len(ports) != 1 or ports[0].get("port") != metrics_port or ports[0].get("appProtocol") != APP_PROTOCOL[spec["protocol"]]:
            fail(f"service/{name}-metrics: no port named metrics on {metrics_port} with appProtocol {APP_PROTOCOL[spec['protocol']]}: {service.get('ports')}")


# The label kube-prometheus-stack's Prometheus selects ServiceMonitors by
# (its Helm release's name; the chart's own name as the release here).
OPERATOR_RELEASE_LABEL = {"release": "kube-prometheus-stack"}
SERVICE_MONITOR_FIELDS = {"jobLabel", "selector", "namespaceSelector", "endpoints", "targetLabels", "podTargetLabels", "sampleLimit"}
ENDPOINT_FIELDS = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings", "metricRelabelings", "honorLabels"}


def check_service_monitor(name, monitor, objects, components):
    """k8s/components/prometheus-operator: the ServiceMonitor selects every
    component's -metrics Service by a label they all carry, scrapes the
    port named metrics, names each job after its component, carries the
    label kube-prometheus-stack selects, and a NetworkPolicy lets that
    Prometheus (from its own namespace) reach each metrics port."""
    where = f"servicemonitor/{name}"
    spec = monitor.get("spec", {})
    if set(spec) - SERVICE_MONITOR_FIELDS:
        fail(f"{where}: unknown fields {sorted(set(spec) - SERVICE_MONITOR_FIELDS)}")
    for endpoint in spec.get("endpoints", []):
        if set(endpoint) - ENDPOINT_FIELDS:
            fail(f"{where}: unknown endpoint fields {sorted(set(endpoint) - ENDPOINT_FIELDS)}")
    labels = monitor["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in OPERATOR_RELEASE_LABEL.items()):
        fail(f"{where}: not labelled {OPERATOR_RELEASE_LABEL}: kube-prometheus-stack's Prometheus would not select it")
    if spec.get("jobLabel") != NAME_LABEL:
        fail(f"{where}: jobLabel {spec.get('jobLabel')!r}: the dashboard selects job by component name ({NAME_LABEL})")
    if [e.get("port") for e in spec.get("endpoints", [])] != ["metrics"]:
        fail(f"{where}: does not scrape the port named metrics: {spec.get('endpoints')}")
    services = by_kind(objects, "Service")
    policies = by_kind(objects, "NetworkPolicy")
    for component, detail in components.items():
        service = services.get(f"{component}-metrics", {})
        if not selects(spec.get("selector", {}), service.get("metadata", {}).get("labels", {})):
            fail(f"{where}: does not select service/{component}-metrics")
        target = next((p.get("targetPort") for p in service.get("spec", {}).get("ports", []) if p.get("name") == "metrics"), None)
        container = by_kind(objects, "Deployment").get(component, {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])[0]
        port = next((p["containerPort"] for p in container.get("ports", []) if p.get("name") == target), target)
        allowed = False
        for policy in policies.values():
            if not selects(policy["spec"]["podSelector"], {NAME_LABEL: component}):
                continue
            for rule in policy["spec"].get("ingress", []):
                ports = [p.get("port") for p in rule.get("ports", [])]
                for peer in rule.get("from", []):
                    if peer.get("namespaceSelector") and (peer.get("podSelector") or {}).get("matchLabels", {}).get(NAME_LABEL) == "prometheus" and (not ports or port in ports):
                        allowed = True
        if not allowed:
            fail(f"{component}: no NetworkPolicy lets an operator's Prometheus (another namespace) reach its metrics port {port}")


def check_observability(objects, components, dashboard_path):
    """The observability component's promises (see the module doc)."""
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    configmaps = by_kind(objects, "ConfigMap")
    policies = by_kind(objects, "NetworkPolicy")
    for name in OBSERVABILITY:
        deployment = deployments.get(name)
        if not deployment:
            fail(f"observability: no deployment/{name}")
            continue
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            image = container["image"]
            tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            if not tag or tag == "latest":
                fail(f"deployment/{name}: image {image} is not pinned to a version")
        service = services.get(name, {}).get("spec", {})
        if service.get("selector", {}).get(NAME_LABEL) != name:
            fail(f"observability: no service/{name} selecting its pods")
    if 4317 not in [p.get("port") for p in services.get("otel-collector", {}).get("spec", {}).get("ports", [])]:
        fail("service/otel-collector: no OTLP/gRPC port 4317")
    for name in components:
        if name not in deployments:
            continue
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        endpoint = env_value(container, "OTEL_EXPORTER_OTLP_ENDPOINT", configmaps)
        if endpoint != OTLP_ENDPOINT:
            fail(f"deployment/{name}: OTEL_EXPORTER_OTLP_ENDPOINT is {endpoint!r}, not the collector's {OTLP_ENDPOINT}")
    senders = allowed_clients(policies, "otel-collector", 4317)
    if not set(components) <= senders:
        fail(f"otel-collector: reachable on 4317 from {sorted(senders)}, not from every component")
    if "otel-collector" not in allowed_clients(policies, "jaeger", 4317) and "*" not in allowed_clients(policies, "jaeger", 4317):
        fail("jaeger: the collector cannot reach it on 4317")
    if not allowed_clients(policies, "prometheus", 9090) & {"grafana", "*"}:
        fail("prometheus: Grafana cannot reach it on 9090")
    scrape = next((c.get("data", {}).get("prometheus.yml", "") for n, c in configmaps.items() if re.fullmatch(GENERATED.format("prometheus-config"), n)), None)
    if scrape is None:
        fail("configmap prometheus-config: not generated with a content hash")
    else:
        jobs = {job["job_name"]: job for job in (yaml.safe_load(scrape) or {}).get("scrape_configs", [])}
        for name in components:
            names = [n for sd in jobs.get(name, {}).get("dns_sd_configs", []) for n in sd.get("names", [])]
            if names != [f"_metrics._tcp.{name}-metrics"]:
                fail(f"prometheus: job {name} scrapes {names}, not the SRV records of service/{name}-metrics")
    dashboards = [c for n, c in configmaps.items() if re.fullmatch(GENERATED.format("grafana-dashboards"), n)]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    if not dashboards or json.loads(dashboards[0].get("data", {}).get("votemesh.json", "{}")) != dashboard:
        fail("configmap grafana-dashboards: does not hold the votemesh dashboard")


# The dashboard Grafana must be given (also the compose profile's).
DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../k8s/components/observability/votemesh-dashboard.json")


def main(rendered_path, components_path, flavour, version, registry=REGISTRY, dashboard_path=DASHBOARD):
    if flavour not in ("base", "dev", "prod"):
        fail(f"unknown flavour {flavour}")
    with open(rendered_path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    with open(components_path) as f:
        components = json.load(f)
    # Clients only (the vote bot): checked by check_bots, not as components.
    bots = {n: s for n, s in components.items() if s.get("client")}
    components = {n: s for n, s in components.items() if not s.get("client")}

    # One namespace for everything: an object outside it (a component added
    # at an overlay that sets no namespace) lands in the current context's
    # namespace, where the services' short DNS names do not reach it.
    # One label on everything, so `kubectl apply --prune -l` applies and
    # prunes every object (an object without it would be skipped).
    for o in objects:
        if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "votemesh":
            fail(f"{o['kind']}/{o['metadata']['name']}: no label app.kubernetes.io/part-of=votemesh (kubectl apply --prune -l would skip it)")
    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE:
            fail(f"{o['kind']}/{o['metadata']['name']}: namespace {o['metadata'].get('namespace')!r}, not {NAMESPACE}")

    deployments = by_kind(objects, "Deployment")
    statefulsets = by_kind(objects, "StatefulSet")
    accounts = by_kind(objects, "ServiceAccount")
    scaled_out = REDIS_CLUSTER in statefulsets
    for name, spec in components.items():
        if name not in deployments:
            fail(f"no deployment/{name}")
            continue
        check_component(name, spec, deployments[name], flavour, version, registry, scaled_out)
    jobs = by_kind(objects, "Job")
    for owner, workload in list(deployments.items()) + list(statefulsets.items()) + list(jobs.items()):
        pod = workload["spec"]["template"]["spec"]
        check_service_account(owner, pod, accounts)
        writable = flavour == "dev" and owner in components
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            check_container_basics(owner, pod, container, writable)
        if pod.get("initContainers"):
            fail(f"{owner}: init containers (services ride out missing dependencies by retrying)")

    for store in (REDIS_CLUSTER,) if scaled_out else ("postgres", "redis"):
        if not statefulsets.get(store, {}).get("spec", {}).get("volumeClaimTemplates"):
            fail(f"statefulset/{store}: no PersistentVolumeClaim")

    observed = "prometheus" in deployments
    # A Prometheus of the cluster's own (k8s/components/prometheus-operator).
    scraped = observed or bool(by_kind(objects, "ServiceMonitor"))
    policies = by_kind(objects, "NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies.values()):
        fail("no default-deny ingress NetworkPolicy")
    for store, expected in {} if scaled_out else STORE_CLIENTS.items():
        clients = allowed_clients(policies, store)
        if clients != expected:
            fail(f"{store} is reachable from {sorted(clients)}, expected only {sorted(expected)}")
    grpc_backends = {
        b.get("name")
        for route in by_kind(objects, "GRPCRoute").values()
        for rule in route.get("spec", {}).get("rules", [])
        for b in rule.get("backendRefs", [])
    }
    for name, expected in COMPONENT_CLIENTS.items():
        if name not in components:
            continue
        clients = allowed_clients(policies, name, components[name]["port"])
        if scraped and "*" not in expected and "admin_port" not in components[name]:
            expected = expected | {"prometheus"}
        if name in grpc_backends:
            # k8s/components/public-grpc: the Gateway's proxies, by namespace.
            expected = expected | {c for c in clients if c.startswith("namespace:")}
        if clients != expected:
            fail(f"{name} is reachable on port {components[name]['port']} from {sorted(clients)}, expected only {sorted(expected)}")
        if "admin_port" in components[name]:
            # The operators' port: Prometheus only, never anyone.
            admin = components[name]["admin_port"]
            clients = allowed_clients(policies, name, admin)
            expected = {"prometheus"} if scraped else set()
            if clients != expected:
                fail(f"{name} is reachable on its admin port {admin} from {sorted(clients)}, expected only {sorted(expected)}")

    pdbs = by_kind(objects, "PodDisruptionBudget")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    if flavour == "dev":
        # Only the scaled-out flavour's workloads of several replicas have one.
        single = sorted(n for n in pdbs if not scaled_out or n not in (REDIS_CLUSTER, "worker"))
        if single:
            fail(f"dev: PodDisruptionBudgets {single} with one replica each block every kubectl drain")
    for name in components if flavour != "dev" else ():
        if name not in pdbs:
            fail(f"deployment/{name}: no PodDisruptionBudget")
        elif name in deployments:
            check_disruption_budget(name, pdbs[name], deployments[name]["spec"]["template"]["metadata"].get("labels", {}))
    if "redis" in statefulsets:
        check_redis_memory(statefulsets["redis"])
    if scaled_out:
        check_scaled_out(objects, flavour)
    if "postgres" in statefulsets:
        check_database_config(statefulsets["postgres"], objects)
    if flavour == "dev":
        if hpas:
            fail(f"dev: HorizontalPodAutoscalers {sorted(hpas)} would scale past one replica")
    for name in AUTOSCALED if flavour != "dev" else ():
        hpa = hpas.get(name, {}).get("spec", {})
        if hpa.get("scaleTargetRef", {}).get("name") != name:
            fail(f"deployment/{name}: no HorizontalPodAutoscaler")
        elif hpa.get("minReplicas") != REPLICAS[name]:
            fail(f"deployment/{name}: autoscales from {hpa.get('minReplicas')}, expected {REPLICAS[name]}")

    services = by_kind(objects, "Service")
    for name in ("vote", "result") if scaled_out else ("vote", "result", "redis", "postgres"):
        spec = services.get(name, {}).get("spec", {})
        if name not in services or spec.get("type", "ClusterIP") != "ClusterIP" or spec.get("clusterIP") == "None":
            fail(f"service/{name}: missing or not a ClusterIP service")
    # gRPC is cleartext HTTP/2: say so, or a mesh or load balancer may speak
    # HTTP/1.1 to it.
    grpc_ports = {spec["port"] for spec in components.values() if spec["protocol"] == "grpc"}
    for name, service in services.items():
        for port in service["spec"].get("ports", []):
            if port.get("port") in grpc_ports and port.get("appProtocol") != "kubernetes.io/h2c":
                fail(f"service/{name}: gRPC port {port.get('port')} has appProtocol {port.get('appProtocol')!r}, not kubernetes.io/h2c")
    check_upstreams(objects, components)
    check_bots(objects, bots, components)
    check_metrics(objects, components)
    check_app_protocols(objects)
    if observed:
        check_observability(objects, components, dashboard_path)
    for name, monitor in by_kind(objects, "ServiceMonitor").items():
        check_service_monitor(name, monitor, objects, components)
    check_exposure(objects, flavour, components)
    check_generated_config(objects, flavour)
    check_secrets_stay_secret(objects)

    for message in failures:
        print(f"FAIL {message}")
    print(f"{flavour}: {len(objects)} objects checked, {len(failures)} broken promises")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
