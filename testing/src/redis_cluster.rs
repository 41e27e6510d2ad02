//! A throwaway Redis Cluster for one test: `redis-server --cluster-enabled
//! yes` nodes on free loopback ports (each with its bus port, + 10000,
//! free too), formed with `redis-cli --cluster create`, and what a test
//! needs to hurt it: which node serves a key, killing a primary and waiting
//! for its replica to take over.
//!
//! ```text
//! start(3, 1) ─► 6 × RedisServer (cluster mode) ─► redis-cli --cluster create ... --cluster-replicas 1
//!             ─► wait: every node says cluster_state:ok and knows every other
//! ```

use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::{HarnessError, RedisServer, START_TIMEOUT, process::find_binary};

/// A running Redis Cluster, its nodes killed when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its id in the cluster.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// Whether it is a primary (`master`) now.
    pub primary: bool,
    /// The id of its primary, if it is a replica.
    pub replica_of: Option<String>,
    /// Whether the others see it as failed.
    pub failed: bool,
    /// The slot ranges it serves (primaries only).
    pub slots: Vec<(u16, u16)>,
}

impl ClusterNode {
    /// Whether it is a live primary serving `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.primary
            && !self.failed
            && self
                .slots
                .iter()
                .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each and forms
    /// the cluster; returns once every node agrees it is whole.
    pub async fn start(primaries: usize, replicas: usize) -> Result<Self, HarnessError> {
        let count = primaries * (1 + replicas);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(RedisServer::start_cluster_node().await?);
        }
        let cli = find_binary("redis-cli", &[], "apt-get install -y redis-tools")?;
        let output = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(
                nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port())),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .map_err(HarnessError::io("running redis-cli --cluster create"))?;
        if !output.status.success() {
            return Err(HarnessError::Failed(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let cluster = Self { nodes };
        cluster
            .wait_until_whole(count, primaries * replicas)
            .await?;
        Ok(cluster)
    }

    /// The seed nodes as `REDIS_CLUSTER_NODES` takes them:
    /// `127.0.0.1:<port>,...`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes, in the order they were started.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node on `port`, to stop, freeze or restart it.
    pub fn node_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|node| node.port() == port)
    }

    /// Runs a raw command on the first node that answers.
    pub async fn command(&self, words: &[&str]) -> Result<String, HarnessError> {
        let mut last = None;
        for node in &self.nodes {
            match node.command(words).await {
                Ok(reply) => return Ok(reply),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Failed("the cluster has no node".into())))
    }

    /// Runs a raw command about `key` on the primary that serves it now.
    pub async fn command_for_key(&self, key: &str, words: &[&str]) -> Result<String, HarnessError> {
        let primary = self.primary_of(key).await?;
        RedisServer::command_on(primary.port, words).await
    }

    /// The cluster as a live node sees it (`CLUSTER NODES`).
    pub async fn topology(&self) -> Result<Vec<ClusterNode>, HarnessError> {
        let reply = self.command(&["CLUSTER", "NODES"]).await?;
        Ok(parse_nodes(&reply))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> Result<u16, HarnessError> {
        let reply = self.command(&["CLUSTER", "KEYSLOT", key]).await?;
        reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .map_err(|_| HarnessError::Failed(format!("CLUSTER KEYSLOT answered {reply:?}")))
    }

    /// The primary serving `key` now.
    pub async fn primary_of(&self, key: &str) -> Result<ClusterNode, HarnessError> {
        let slot = self.slot_of(key).await?;
        self.topology()
            .await?
            .into_iter()
            .find(|node| node.serves(slot))
            .ok_or_else(|| HarnessError::Failed(format!("no live primary serves slot {slot}")))
    }

    /// The replicas of the primary on `port`.
    pub async fn replicas_of(&self, port: u16) -> Result<Vec<ClusterNode>, HarnessError> {
        let topology = self.topology().await?;
        let primary = topology
            .iter()
            .find(|node| node.port == port)
            .ok_or_else(|| HarnessError::Failed(format!("no node on port {port}")))?;
        Ok(topology
            .iter()
            .filter(|node| node.replica_of.as_deref() == Some(primary.id.as_str()))
            .cloned()
            .collect())
    }

    /// Moves `slot`, with its keys, from the primary that serves it to the
    /// primary on `to_port`, step by step as `redis-cli --cluster reshard`
    /// does (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE` in
    /// batches of `keys_per_step`, then `SETSLOT ... NODE` on every
    /// primary), pausing `pause` between steps so a test's traffic meets
    /// the slot half-moved.
    pub async fn migrate_slot(
        &self,
        slot: u16,
        to_port: u16,
        keys_per_step: usize,
        pause: Duration,
    ) -> Result<(), HarnessError> {
        let topology = self.topology().await?;
        let from = topology
            .iter()
            .find(|node| node.serves(slot))
            .ok_or_else(|| HarnessError::Failed(format!("no primary serves slot {slot}")))?;
        let to = topology
            .iter()
            .find(|node| node.port == to_port && node.primary)
            .ok_or_else(|| HarnessError::Failed(format!("no primary on port {to_port}")))?;
        let slot_text = slot.to_string();
        let (slot_text, to_port_text) = (slot_text.as_str(), to.port.to_string());
        node_command(
            to.port,
            &["CLUSTER", "SETSLOT", slot_text, "IMPORTING", &from.id],
        )
        .await?;
        node_command(
            from.port,
            &["CLUSTER", "SETSLOT", slot_text, "MIGRATING", &to.id],
        )
        .await?;
        let count = keys_per_step.to_string();
        loop {
            let reply =
                node_command(from.port, &["CLUSTER", "GETKEYSINSLOT", slot_text, &count]).await?;
            let keys: Vec<&str> = reply
                .lines()
                .skip(1)
                .filter(|line| !line.starts_with('$'))
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut words = vec![
                "MIGRATE",
                "127.0.0.1",
                &to_port_text,
                "",
                "0",
                "5000",
                "KEYS",
            ];
            words.extend(keys.iter().copied());
            node_command(from.port, &words).await?;
            tokio::time::sleep(pause).await;
        }
        for node in topology.iter().filter(|node| node.primary && !node.failed) {
            node_command(
                node.port,
                &["CLUSTER", "SETSLOT", slot_text, "NODE", &to.id],
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until a live primary other than the one on `old_port` serves
    /// `key`, and the cluster is whole again from the live nodes' view:
    /// a replica took over after its primary died.
    pub async fn wait_for_failover(&self, key: &str, old_port: u16) -> Result<u16, HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(primary) = self.primary_of(key).await
                && primary.port != old_port
                && self.live_nodes_say_ok().await
            {
                return Ok(primary.port);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Failed(format!(
                    "no replica took over {key} from the primary on {old_port} within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether every node that answers says `cluster_state:ok`.
    async fn live_nodes_say_ok(&self) -> bool {
        let mut answered = 0;
        for node in &self.nodes {
            if let Ok(info) = node.command(&["CLUSTER", "INFO"]).await {
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                answered += 1;
            }
        }
        answered > 0
    }

    /// Waits until every node says `cluster_state:ok`, knows all `count`
    /// nodes, each connected, `replicas` of them replicas (`redis-cli`
    /// makes them replicas after the slots are covered, and the news
    /// spreads by gossip), and every replica has finished its first sync
    /// with its primary.
    async fn wait_until_whole(&self, count: usize, replicas: usize) -> Result<(), HarnessError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut whole = self.live_nodes_say_ok().await;
            for node in &self.nodes {
                let known = node
                    .command(&["CLUSTER", "NODES"])
                    .await
                    .map(|reply| parse_nodes(&reply))
                    .unwrap_or_default();
                whole &= known.len() == count
                    && known.iter().all(|node| !node.failed)
                    && known
                        .iter()
                        .filter(|node| node.replica_of.is_some())
                        .count()
                        == replicas;
                // A replica counts once its first sync is done: until then
                // a WAIT for it times out.
                let replication = node
                    .command(&["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                if replication.contains("role:slave") {
                    whole &= replication.contains("master_link_status:up");
                }
            }
            if whole {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Failed(format!(
                    "the Redis Cluster did not become whole within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs `words` on the node on `port`; an error reply (not `+...` or an
/// array) is an error naming the command.
async fn node_command(port: u16, words: &[&str]) -> Result<String, HarnessError> {
    let reply = RedisServer::command_on(port, words).await?;
    if reply.starts_with('+') || reply.starts_with('*') {
        Ok(reply)
    } else {
        Err(HarnessError::Failed(format!(
            "{} on {port}: {reply:?}",
            words[..words.len().min(3)].join(" ")
        )))
    }
}

/// Reads `CLUSTER NODES` (a bulk string of one line per node: `id
/// ip:port@bus flags primary-id ping pong epoch link slot...`).
fn parse_nodes(reply: &str) -> Vec<ClusterNode> {
    reply
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((first, last)) => Some((first.parse().ok()?, last.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                primary: flags.contains("master"),
                replica_of: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_read_with_their_slots() {
        let reply = "$300\r\n\
            a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
            b2 127.0.0.1:30002@40002 master - 0 0 2 connected 5461-10922 12000\n\
            c3 127.0.0.1:30003@40003 slave,fail b2 0 0 2 disconnected\n";
        let nodes = parse_nodes(reply);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].port, 30001);
        assert!(nodes[0].primary && !nodes[0].failed);
        assert_eq!(nodes[1].slots, vec![(5461, 10922), (12000, 12000)]);
        assert!(!nodes[2].primary && nodes[2].failed);
        assert_eq!(nodes[2].replica_of.as_deref(), Some("b2"));
        assert_eq!(nodes[0].replica_of, None);
    }
}
