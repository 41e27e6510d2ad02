//! A Kubernetes headless Service, as a test plays it: the set of
//! addresses a name resolves to, which the test changes as replicas come
//! and go. votemesh's clients follow it through the same resolver
//! interface they use for DNS ([`votemesh::client::balance::Resolve`]).
//! This machine has no name that resolves to several loopback addresses,
//! so tests give the set directly.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use votemesh::client::balance::Resolve;

/// The addresses behind one upstream name; clones share them.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    name: String,
    addresses: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Endpoints {
    /// A name for logs and the addresses it starts with.
    pub fn new(name: &str, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            name: name.to_owned(),
            addresses: Arc::new(Mutex::new(addresses.into_iter().collect())),
        }
    }

    /// Adds an address (a replica became ready).
    pub fn add(&self, addr: SocketAddr) {
        self.with(|addresses| addresses.insert(addr));
    }

    /// Removes an address (a replica is going away).
    pub fn remove(&self, addr: SocketAddr) {
        self.with(|addresses| addresses.remove(&addr));
    }

    fn with<T>(&self, change: impl FnOnce(&mut HashSet<SocketAddr>) -> T) -> T {
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut addresses)
    }
}

impl Resolve for Endpoints {
    async fn resolve(&self) -> std::io::Result<HashSet<SocketAddr>> {
        Ok(self.with(|addresses| addresses.clone()))
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
