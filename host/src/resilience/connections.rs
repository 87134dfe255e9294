//! Caps on open client connections (`[server] max_connections` and
//! `max_connections_per_client`), and the count of the connections open, in
//! all and per client address, that they are checked against.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

/// The caps on open client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Open connections in all, across every listener and thread.
    pub total: usize,
    /// Open connections from one client address; `None` for no cap.
    pub per_client: Option<usize>,
}

/// Which cap a connection was shed at, as `sluice_client_connections_shed_total`
/// labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `max_connections`.
    Total,
    /// `max_connections_per_client`.
    PerClient,
}

impl Shed {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Shed::Total => "total",
            Shed::PerClient => "per_client",
        }
    }
}

/// The open client connections, in all and by client address.
#[derive(Debug)]
pub struct OpenConnections {
    total: AtomicUsize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
    /// `sluice_client_connections`, following `total`.
    gauge: IntGauge,
}

impl OpenConnections {
    /// No connection open yet; `gauge` follows the count.
    pub fn new(gauge: IntGauge) -> Self {
        Self {
            total: AtomicUsize::new(0),
            by_client: Mutex::new(HashMap::new()),
            gauge,
        }
    }

    /// Counts a new connection from `client` unless a cap is reached; the
    /// connection stays counted until the returned guard drops.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        caps: ConnectionCaps,
    ) -> Result<Admitted, Shed> {
        let previous = self.total.fetch_add(1, Ordering::AcqRel);
        if previous >= caps.total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Shed::Total);
        }
        if let Some(client) = client {
            let mut by_client = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
            let open = by_client.entry(client).or_default();
            if caps.per_client.is_some_and(|cap| *open >= cap) {
                drop(by_client);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Shed::PerClient);
            }
            *open += 1;
        }
        self.gauge.inc();
        Ok(Admitted {
            open: self.clone(),
            client,
        })
    }

    /// Connections open now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `client`.
    pub fn from_client(&self, client: IpAddr) -> usize {
        let by_client = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        by_client.get(&client).copied().unwrap_or(0)
    }

    fn release(&self, client: Option<IpAddr>) {
        if let Some(client) = client {
            let mut by_client = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = by_client.get_mut(&client) {
                *open -= 1;
                if *open == 0 {
                    by_client.remove(&client);
                }
            }
        }
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// One admitted connection; dropping it ends its count.
#[derive(Debug)]
pub struct Admitted {
    open: Arc<OpenConnections>,
    client: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.release(self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn opened() -> Arc<OpenConnections> {
        Arc::new(OpenConnections::new(
            IntGauge::new("open", "open connections").unwrap(),
        ))
    }

    #[test]
    fn the_total_cap_sheds_the_connection_past_it_until_one_closes() {
        let open = opened();
        let caps = ConnectionCaps {
            total: 2,
            per_client: None,
        };
        let first = open.admit(Some(CLIENT), caps).unwrap();
        let _second = open.admit(Some(OTHER), caps).unwrap();
        assert_eq!(open.admit(Some(OTHER), caps).unwrap_err(), Shed::Total);
        assert_eq!((open.total(), open.gauge.get()), (2, 2));
        drop(first);
        assert_eq!(open.gauge.get(), 1);
        assert!(open.admit(None, caps).is_ok());
    }

    #[test]
    fn the_per_client_cap_counts_each_address_apart() {
        let open = opened();
        let caps = ConnectionCaps {
            total: 100,
            per_client: Some(1),
        };
        let first = open.admit(Some(CLIENT), caps).unwrap();
        assert_eq!(open.admit(Some(CLIENT), caps).unwrap_err(), Shed::PerClient);
        let _other = open.admit(Some(OTHER), caps).unwrap();
        assert_eq!((open.total(), open.from_client(CLIENT)), (2, 1));
        drop(first);
        assert_eq!(open.from_client(CLIENT), 0);
        assert!(open.admit(Some(CLIENT), caps).is_ok());
    }
}
