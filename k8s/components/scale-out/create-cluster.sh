#!/bin/sh
# Forms the Redis Cluster of redis-cluster.yaml, idempotently (the Job
# redis-cluster-create runs it; run again, it changes nothing on a formed
# cluster):
# 1. waits until every node of NODES (host:port, space-separated) answers;
# 2. if no node knows of an assigned slot, creates the cluster
#    (redis-cli --cluster create, REPLICAS replicas a primary);
#    otherwise introduces the nodes that are in it to each other at their
#    current addresses (CLUSTER MEET; after every pod restarted with a new
#    address, the nodes find each other again);
# 3. waits until every node reports cluster_state:ok.
# CLUSTER MEET and --cluster create take addresses, not names: each node's
# own is the local address of our connection (CLIENT INFO's laddr).
set -eu

: "${NODES:?space-separated host:port of every node}"
: "${REPLICAS:?replicas per primary}"
TRIES=${TRIES:-150}

# cli HOST:PORT ARGS...: redis-cli on one node, carriage returns dropped.
cli() {
  node=$1
  shift
  redis-cli -h "${node%:*}" -p "${node##*:}" "$@" | tr -d '\r'
}

# info_field HOST:PORT FIELD: a field of CLUSTER INFO.
info_field() {
  cli "$1" cluster info | sed -n "s/^$2:\\(.*\\)\$/\\1/p"
}

# address HOST:PORT: the node's own ip:port.
address() {
  cli "$1" client info | sed -n 's/.* laddr=\([^ ]*\) .*/\1/p'
}

for node in $NODES; do
  tries=0
  until [ "$(cli "$node" ping 2>/dev/null)" = PONG ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge "$TRIES" ]; then
      echo "$node does not answer" >&2
      exit 1
    fi
    echo "waiting for $node"
    sleep 2
  done
done

formed=""
addresses=""
for node in $NODES; do
  ip_port=$(address "$node")
  if [ -z "$ip_port" ]; then
    echo "$node: no address in CLIENT INFO" >&2
    exit 1
  fi
  addresses="$addresses $ip_port"
  if [ "$(info_field "$node" cluster_slots_assigned)" != 0 ]; then
    formed="$formed $node"
  fi
done

if [ -z "$formed" ]; then
  echo "creating the cluster:$addresses"
  # shellcheck disable=SC2086 # one argument per address
  redis-cli --cluster create $addresses --cluster-replicas "$REPLICAS" --cluster-yes
else
  echo "already formed (slots known to:$formed); introducing its nodes again"
  for node in $formed; do
    for other in $formed; do
      if [ "$other" != "$node" ]; then
        ip_port=$(address "$other")
        cli "$node" cluster meet "${ip_port%:*}" "${ip_port##*:}" >/dev/null
      fi
    done
  done
  for node in $NODES; do
    case " $formed " in
      *" $node "*) ;;
      *) echo "$node knows no slots (an empty volume?): add it by hand, see docs/DEPLOYING.md" >&2 ;;
    esac
  done
fi

for node in $NODES; do
  tries=0
  until [ "$(info_field "$node" cluster_state)" = ok ]; do
    tries=$((tries + 1))
    if [ "$tries" -ge "$TRIES" ]; then
      echo "$node: cluster_state is not ok" >&2
      exit 1
    fi
    sleep 2
  done
done
echo "cluster formed:"
cli "${NODES%% *}" cluster nodes
