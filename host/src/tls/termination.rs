//! TLS termination for HTTPS listeners, with Sluice's own rustls settings.
//!
//! Pingora's `TlsSettings` builds its rustls `ServerConfig` itself, with TLS
//! 1.2 and 1.3 fixed, and takes no other. So HTTPS listeners are bound as
//! plain TCP listeners, and [`TlsTermination`] runs each handshake with a
//! `ServerConfig` built here (see [`server_config`]) before handing the
//! connection to the HTTP proxy: the same TLS stream Pingora's own listener
//! would have handed it, ALPN and SSL digest included.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use rustls::server::ResolvesServerCert;
use rustls::{ServerConfig, SupportedProtocolVersion};

/// How long a client may take to complete its handshake, as Pingora allows
/// on its own listeners.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS 1.2 and 1.3.
static FROM_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
/// TLS 1.3 only.
static FROM_TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The oldest TLS version an HTTPS listener accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MinTlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinTlsVersion {
    /// Reads the version as a config writes it: `"1.2"` or `"1.3"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "1.2" => Some(Self::Tls12),
            "1.3" => Some(Self::Tls13),
            _ => None,
        }
    }

    /// The protocol versions a listener with this minimum offers.
    pub fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            Self::Tls12 => FROM_TLS12,
            Self::Tls13 => FROM_TLS13,
        }
    }
}

impl fmt::Display for MinTlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        })
    }
}

/// The rustls settings of an HTTPS listener: the protocol versions from
/// `min_version` on, certificates from `certificates` (by SNI, at each
/// handshake), and HTTP/2 then HTTP/1.1 offered through ALPN.
pub fn server_config(
    min_version: MinTlsVersion,
    certificates: Arc<dyn ResolvesServerCert>,
) -> Result<ServerConfig, rustls::Error> {
    // The provider Pingora's own listeners and connectors install.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(min_version.versions())?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// One listener of a [`TlsTermination`]'s service.
struct Listener {
    address: SocketAddr,
    /// `None` on a plain-HTTP listener.
    acceptor: Option<Acceptor>,
}

/// A Pingora app in front of `A` that terminates TLS on the connections of
/// its HTTPS listeners and passes those of its plain listeners as they
/// are. Every listener of the service must be added with
/// [`Self::add_plain`] or [`Self::add_https`], bound as plain TCP; a
/// connection is told apart by the local address it arrived on.
pub struct TlsTermination<A> {
    inner: Arc<A>,
    listeners: Vec<Listener>,
    /// Whether any listener is HTTPS; if none is, connections pass untouched.
    any_https: bool,
}

impl<A> TlsTermination<A> {
    /// Terminates TLS in front of `inner`, on no listener yet.
    pub fn new(inner: A) -> Self {
        Self {
            inner: Arc::new(inner),
            listeners: Vec::new(),
            any_https: false,
        }
    }

    /// A plain-HTTP listener at `address`.
    pub fn add_plain(&mut self, address: SocketAddr) {
        self.listeners.push(Listener {
            address,
            acceptor: None,
        });
    }

    /// An HTTPS listener at `address`, handshaking with `config`.
    pub fn add_https(&mut self, address: SocketAddr, config: ServerConfig) {
        self.listeners.push(Listener {
            address,
            acceptor: Some(Acceptor::from_server_config(Arc::new(config))),
        });
        self.any_https = true;
    }

    /// The listener a connection to `local` arrived on.
    fn listener_for(&self, local: SocketAddr) -> Option<&Listener> {
        crate::support::net::listening_on(self.listeners.iter().map(|l| l.address), local)
            .map(|i| &self.listeners[i])
    }

    /// `stream` ready for HTTP: after a TLS handshake if it arrived on an
    /// HTTPS listener, as it is otherwise; `None` when the handshake fails
    /// or the listener cannot be told.
    async fn terminate(&self, stream: Stream) -> Option<Stream> {
        let digest = stream.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .copied();
        let Some(local) = digest
            .as_ref()
            .and_then(|d| d.local_addr())
            .and_then(|a| a.as_inet())
            .copied()
        else {
            // Serving it as plain HTTP could answer a TLS client in clear.
            tracing::warn!(?peer, "connection dropped: its local address is unknown");
            return None;
        };
        let Some(listener) = self.listener_for(local) else {
            tracing::warn!(?peer, %local, "connection dropped: no listener has its address");
            return None;
        };
        let Some(acceptor) = &listener.acceptor else {
            return Some(stream);
        };
        // Pingora's TCP listeners yield its own TCP stream type; the TLS
        // stream wraps that, as on Pingora's TLS listeners.
        let tcp = match stream.into_any().downcast::<TcpStream>() {
            Ok(tcp) => *tcp,
            Err(_) => {
                tracing::error!(%local, "connection dropped: not a TCP stream, cannot run TLS on it");
                return None;
            }
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(tcp)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(error)) => {
                tracing::debug!(?peer, %local, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(?peer, %local, "TLS handshake timed out");
                None
            }
        }
    }
}

#[async_trait]
impl<A> ServerApp for TlsTermination<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = if self.any_https {
            // Boxed: inline, the handshake's state would stay allocated
            // with this future for as long as the connection is open.
            Box::pin(self.terminate(stream)).await?
        } else {
            stream
        };
        crate::support::apps::serve_to_end(&self.inner, stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_written_and_nothing_else() {
        assert_eq!(MinTlsVersion::parse("1.2"), Some(MinTlsVersion::Tls12));
        assert_eq!(MinTlsVersion::parse("1.3"), Some(MinTlsVersion::Tls13));
        for wrong in ["1.1", "1.0", "TLS1.3", "1.3 ", "", "3"] {
            assert_eq!(MinTlsVersion::parse(wrong), None, "{wrong:?}");
        }
        assert_eq!(MinTlsVersion::default().to_string(), "1.2");
        assert_eq!(MinTlsVersion::Tls13.to_string(), "1.3");
    }

    #[test]
    fn the_minimum_bounds_the_versions_offered() {
        let offered = |min: MinTlsVersion| -> Vec<rustls::ProtocolVersion> {
            min.versions().iter().map(|v| v.version).collect()
        };
        assert_eq!(
            offered(MinTlsVersion::Tls12),
            [
                rustls::ProtocolVersion::TLSv1_3,
                rustls::ProtocolVersion::TLSv1_2
            ]
        );
        assert_eq!(
            offered(MinTlsVersion::Tls13),
            [rustls::ProtocolVersion::TLSv1_3]
        );
    }

    /// Serves one self-signed certificate for `a.test`, whatever the name.
    #[derive(Debug)]
    struct OneCertificate(Arc<rustls::sign::CertifiedKey>);

    impl ResolvesServerCert for OneCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
    }

    /// Runs a handshake in memory between a listener with `min_version`
    /// and a client offering `client_versions` and ALPN h2 then http/1.1:
    /// the version and protocol agreed, or the server's error.
    fn handshake(
        min_version: MinTlsVersion,
        client_versions: &[&'static SupportedProtocolVersion],
    ) -> Result<(rustls::ProtocolVersion, Vec<u8>), rustls::Error> {
        let generated = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let certificate = crate::tls::certificates::Certificate::from_pem(
            generated.cert.pem().as_bytes(),
            generated.signing_key.serialize_pem().as_bytes(),
            vec!["a.test".to_string()],
            "the test certificate",
        )
        .unwrap();
        let server_config =
            server_config(min_version, Arc::new(OneCertificate(certificate.key))).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(generated.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(client_versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "a.test".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        let mut wire = Vec::new();
        // A TLS 1.2 or 1.3 handshake takes at most three flights each way.
        for _ in 0..4 {
            wire.clear();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok((
                    server.protocol_version().unwrap(),
                    server.alpn_protocol().unwrap_or_default().to_vec(),
                ));
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn a_listener_accepts_exactly_the_versions_from_its_minimum() {
        use rustls::version::{TLS12, TLS13};
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};

        assert_eq!(
            handshake(MinTlsVersion::Tls12, &[&TLS12]).unwrap(),
            (TLSv1_2, b"h2".to_vec())
        );
        assert_eq!(
            handshake(MinTlsVersion::Tls12, &[&TLS13, &TLS12]).unwrap(),
            (TLSv1_3, b"h2".to_vec())
        );
        assert_eq!(
            handshake(MinTlsVersion::Tls13, &[&TLS13]).unwrap(),
            (TLSv1_3, b"h2".to_vec())
        );
        let refused = handshake(MinTlsVersion::Tls13, &[&TLS12]).unwrap_err();
        assert_eq!(
            refused,
            rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled),
            "{refused}"
        );
    }
}
