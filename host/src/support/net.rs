//! Socket addresses: which listener a connection arrived on.

use std::net::SocketAddr;

/// Which of `listeners` a connection to `local` arrived on: the one bound to
/// that very address, else one bound to the unspecified address of its
/// family (`0.0.0.0`, `[::]`) on its port.
pub fn listening_on(
    mut listeners: impl Iterator<Item = SocketAddr> + Clone,
    local: SocketAddr,
) -> Option<usize> {
    listeners
        .clone()
        .position(|address| address == local)
        .or_else(|| {
            listeners.position(|address| {
                address.ip().is_unspecified()
                    && address.port() == local.port()
                    && address.is_ipv4() == local.is_ipv4()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_find_their_listener_by_local_address() {
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        let listeners = [
            address("127.0.0.1:8080"),
            address("0.0.0.0:8443"),
            address("[::]:8443"),
            address("10.0.0.5:443"),
        ];
        let find = |local: &str| listening_on(listeners.iter().copied(), address(local));
        assert_eq!(find("127.0.0.1:8080"), Some(0));
        assert_eq!(find("10.1.2.3:8443"), Some(1));
        assert_eq!(find("[fe80::1]:8443"), Some(2));
        assert_eq!(find("[::ffff:10.1.2.3]:8443"), Some(2));
        assert_eq!(find("10.0.0.5:443"), Some(3));
        assert_eq!(find("10.0.0.6:443"), None);
        assert_eq!(find("10.0.0.5:8080"), None);
    }
}
