//! A gRPC server for Sluice's integration tests and benchmarks: an echo
//! service with the four kinds of call, and the standard
//! `grpc.health.v1` health service, served on a loopback listener over
//! h2c or TLS. Each server answers with its name, so a test sees which
//! endpoint served a call, and can be told to fail every call with a
//! status, to answer slowly, or to report itself not serving.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The echo service's messages and generated server and client.
pub mod proto {
    /// What every call sends.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoRequest {
        /// Echoed back.
        #[prost(string, tag = "1")]
        pub message: String,
        /// How many replies a server-streaming call sends.
        #[prost(uint32, tag = "2")]
        pub count: u32,
        /// The status code a server-streaming call ends with after its
        /// replies (0 for OK); a failing end carries the trailer
        /// `x-echo-end: after-replies`.
        #[prost(int32, tag = "3")]
        pub end_with: i32,
    }

    /// What every call answers.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoReply {
        /// The request's message, or the client stream's joined by commas.
        #[prost(string, tag = "1")]
        pub message: String,
        /// The name of the server that answered.
        #[prost(string, tag = "2")]
        pub served_by: String,
    }

    include!(concat!(env!("OUT_DIR"), "/sluice.test.Echo.rs"));
}

pub use proto::echo_client::EchoClient;
use proto::echo_server::{Echo, EchoServer};
pub use proto::{EchoReply, EchoRequest};

/// The full name of the echo service, as routes and health checks name it.
pub const SERVICE: &str = "sluice.test.Echo";

/// What a running server shares with its test.
#[derive(Clone)]
pub struct Control {
    name: Arc<str>,
    fail_with: Arc<Mutex<Option<Code>>>,
    calls: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    health: HealthReporter,
}

impl Control {
    /// Fails every call with `code` from now on; `None` serves again.
    pub fn fail_with(&self, code: Option<Code>) {
        *self.fail_with.lock().unwrap() = code;
    }

    /// Reports the server, and the echo service, as serving or not to
    /// health checks.
    pub async fn set_serving(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
        self.health.set_service_status(SERVICE, status).await;
    }

    /// Calls received, failed or not.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Makes every call wait `delay` before it answers.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    async fn begin(&self) -> Result<(), Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        match *self.fail_with.lock().unwrap() {
            Some(code) => Err(Status::new(code, format!("{} fails on purpose", self.name))),
            None => Ok(()),
        }
    }

    fn reply(&self, message: String) -> EchoReply {
        EchoReply {
            message,
            served_by: self.name.to_string(),
        }
    }
}

/// A running server; dropping it stops it.
pub struct Server {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its behaviour, changed while it runs.
    pub control: Control,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts a server called `name` on a free loopback port: over TLS with
/// `tls` (a PEM certificate chain and key), else over h2c. It reports
/// itself serving.
pub async fn serve(name: &str, tls: Option<(&[u8], &[u8])>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (health, health_service) = tonic_health::server::health_reporter();
    let control = Control {
        name: Arc::from(name),
        fail_with: Arc::default(),
        calls: Arc::default(),
        connections: Arc::default(),
        delay_ms: Arc::default(),
        health,
    };
    control.set_serving(true).await;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = tls {
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .unwrap();
    }
    let (shutdown, stopped) = oneshot::channel::<()>();
    let router = builder
        .add_service(EchoServer::new(EchoService(control.clone())))
        .add_service(health_service);
    let connections = control.connections.clone();
    let incoming = TcpListenerStream::new(listener).map(move |accepted| {
        connections.fetch_add(1, Ordering::SeqCst);
        accepted
    });
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    Server {
        address,
        control,
        shutdown: Some(shutdown),
    }
}

struct EchoService(Control);

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.0.begin().await?;
        Ok(Response::new(self.0.reply(request.into_inner().message)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.0.begin().await?;
        let request = request.into_inner();
        let replies: Vec<Result<EchoReply, Status>> = (0..request.count)
            .map(|i| Ok(self.0.reply(format!("{} {i}", request.message))))
            .chain((request.end_with != 0).then(|| {
                let mut end = Status::new(Code::from_i32(request.end_with), "ended on request");
                end.metadata_mut()
                    .insert("x-echo-end", "after-replies".parse().unwrap());
                Err(end)
            }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(replies))))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        self.0.begin().await?;
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        while let Some(request) = stream.next().await {
            messages.push(request?.message);
        }
        Ok(Response::new(self.0.reply(messages.join(","))))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        self.0.begin().await?;
        let mut stream = request.into_inner();
        let (replies, out) = mpsc::channel(4);
        let control = self.0.clone();
        // Each reply goes out as its request arrives, while the client
        // still sends: a proxy that buffered either direction would stall.
        tokio::spawn(async move {
            while let Some(request) = stream.next().await {
                let reply = request.map(|request| control.reply(request.message));
                if replies.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
