#!/bin/sh
# A throwaway CA and one certificate per votemesh component, with openssl,
# for mutual TLS without cert-manager (laptop clusters, local runs):
#
#   tools/mtls-dev-certs.sh [DIR] [NAMESPACE]     (default: target/mtls-dev, votemesh)
#
# DIR/<name>/{tls.crt,tls.key,ca.crt} for vote, result, worker, gateway and
# operator, named as the cert-manager component names them (the Service
# DNS names, localhost and 127.0.0.1 for local runs, and the URI
# spiffe://votemesh/<name>). With kubectl on a cluster, it also creates
# the Secrets <name>-tls the mtls component mounts:
#
#   MTLS_APPLY=1 tools/mtls-dev-certs.sh
#
# then deploy an overlay with k8s/components/mtls minus certificates.yaml
# (or keep cert-manager out and apply the Secrets first). The CA key stays
# in DIR/ca: it is a development CA, never a production one.
set -eu
dir=${1:-target/mtls-dev}
ns=${2:-votemesh}
days=30
mkdir -p "$dir/ca"
if [ ! -f "$dir/ca/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca/ca.key" -out "$dir/ca/ca.crt" -days 365 \
    -subj "/CN=votemesh dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

issue() {
  name=$1
  sans=$2
  out="$dir/$name"
  mkdir -p "$out"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/tls.key.tmp" -out "$out/tls.csr" -subj "/CN=$name" 2>/dev/null
  # PKCS#8, as cert-manager writes it with encoding: PKCS8.
  openssl pkcs8 -topk8 -nocrypt -in "$out/tls.key.tmp" -out "$out/tls.key"
  rm -f "$out/tls.key.tmp"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$sans" > "$out/ext.cnf"
  openssl x509 -req -in "$out/tls.csr" -CA "$dir/ca/ca.crt" -CAkey "$dir/ca/ca.key" \
    -CAcreateserial -out "$out/tls.crt" -days "$days" -extfile "$out/ext.cnf" 2>/dev/null
  cp "$dir/ca/ca.crt" "$out/ca.crt"
  rm -f "$out/tls.csr" "$out/ext.cnf"
  if [ "${MTLS_APPLY:-}" = 1 ]; then
    kubectl -n "$ns" create secret generic "$name-tls" \
      --from-file=tls.crt="$out/tls.crt" --from-file=tls.key="$out/tls.key" \
      --from-file=ca.crt="$out/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
  fi
  echo "$out: $sans"
}

dns() {
  for service in "$@"; do
    printf 'DNS:%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local,' "$service" "$service" "$ns" "$service" "$ns"
  done
}

local_names="DNS:localhost,IP:127.0.0.1"
issue vote "$(dns vote vote-pods vote-metrics)${local_names},URI:spiffe://votemesh/vote"
issue result "$(dns result result-pods result-metrics)${local_names},URI:spiffe://votemesh/result"
issue worker "$(dns worker worker-metrics)${local_names},URI:spiffe://votemesh/worker"
issue gateway "$(dns gateway)URI:spiffe://votemesh/gateway"
issue operator "URI:spiffe://votemesh/operator"
