//! Upstream names resolved while the proxy runs: a real DNS server on
//! loopback answers for the test's names, and the test changes its answers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use sluice_demo::upstream;

use crate::common::{client, free_port, get, sluice_binary, Proxy};

/// The records a [`DnsServer`] answers with: name → addresses.
type Zone = Arc<Mutex<HashMap<String, Vec<IpAddr>>>>;

/// An authoritative DNS server on a loopback UDP port, answering A and
/// AAAA queries from a zone the test changes, with a TTL of one second.
struct DnsServer {
    address: SocketAddr,
    zone: Zone,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    async fn start() -> DnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let zone: Zone = Arc::default();
        let answers = zone.clone();
        let task = tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            loop {
                let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buffer[..len]) else {
                    continue;
                };
                let reply = answer(&query, &answers.lock().unwrap());
                let _ = socket.send_to(&reply.to_vec().unwrap(), peer).await;
            }
        });
        DnsServer {
            address,
            zone,
            task,
        }
    }

    /// Makes `name` resolve to `addresses`; none makes it not exist.
    fn set(&self, name: &str, addresses: &[IpAddr]) {
        let mut zone = self.zone.lock().unwrap();
        if addresses.is_empty() {
            zone.remove(name);
        } else {
            zone.insert(name.to_string(), addresses.to_vec());
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(query: &Message, zone: &HashMap<String, Vec<IpAddr>>) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    reply.add_query(question.clone());
    let name = question.name().to_ascii().trim_end_matches('.').to_string();
    let Some(addresses) = zone.get(&name) else {
        reply.set_response_code(ResponseCode::NXDomain);
        return reply;
    };
    for address in addresses {
        let data = match (address, question.query_type()) {
            (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(question.name().clone(), 1, data));
    }
    reply
}

/// The `[resolver]` table for `dns`, asking again quickly.
fn resolver_table(dns: &DnsServer) -> String {
    format!(
        "[resolver]\nnameservers = [\"{}\"]\nmin_ttl = \"200ms\"\nmax_ttl = \"1s\"\nretry = \"200ms\"\ntimeout = \"500ms\"\n",
        dns.address
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_does_not_resolve_is_a_warning_then_fails_over_until_it_resolves() {
    let dns = DnsServer::start().await;
    let port = free_port();
    let backend = upstream::spawn("backend", format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let spare = upstream::spawn("spare", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let body = format!(
        "{resolver}\n[placements.main]\nendpoints = [{{ address = \"backend.sluice.test:{port}\" }}]\nfallback = \"spare\"\n\
         [placements.spare]\nendpoints = [{{ address = \"{spare}\" }}]\n\
         [[routes]]\nplacement = \"main\"\n",
        resolver = resolver_table(&dns),
        spare = spare.address,
    );

    // `check` reports the name by key and line, and passes.
    let dir = crate::common::scratch_dir();
    let path = dir.join("names.toml");
    std::fs::write(
        &path,
        format!("[[listeners]]\naddress = \"127.0.0.1:1\"\n{body}"),
    )
    .unwrap();
    let output = Command::new(sluice_binary())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: line 11: placements.main.endpoints[0].address: \"backend.sluice.test\" does not resolve (no such name (NXDOMAIN))"
        ),
        "{stderr}"
    );

    // `run` starts, and the placement fails over, saying why.
    let proxy = Proxy::start(&body);
    let reply = get(&proxy, "any.test", "/", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.served_by(), "spare");
    assert_eq!(reply.header("x-failover-reason"), "unresolved");
    let (_, status) = proxy.admin("GET", "/status").await;
    let names = &status["upstream_names"];
    assert_eq!(names[0]["name"], "backend.sluice.test", "{status}");
    assert!(names[0]["last_error"].is_string(), "{status}");

    // Once the name resolves, the backend serves, with no reload.
    dns.set("backend.sluice.test", &[ip("127.0.0.1")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&proxy, "any.test", "/", &[]).await;
        assert_eq!(reply.status, 200);
        if reply.served_by() == "backend" {
            assert_eq!(reply.header("x-failover-reason"), "");
            break;
        }
        assert!(Instant::now() < deadline, "the backend never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = proxy.admin("GET", "/status").await;
    assert_eq!(status["upstream_names"][0]["addresses"][0], "127.0.0.1");
    assert_eq!(
        status["placements"][0]["endpoints"][0]["address"],
        format!("backend.sluice.test:{port}@127.0.0.1")
    );
    // The log names the name, its addresses and, before, why it failed.
    let log = proxy.stderr_text();
    let said = |words: &[&str]| {
        log.lines()
            .any(|line| words.iter().all(|word| line.contains(word)))
    };
    assert!(
        said(&[
            "upstream name resolves to new addresses",
            "backend.sluice.test",
            "127.0.0.1"
        ]),
        "{log}"
    );
    assert!(
        said(&[
            "upstream name does not resolve",
            "backend.sluice.test",
            "NXDOMAIN"
        ]),
        "{log}"
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "sluice_upstream_name_address{address=\"127.0.0.1\",name=\"backend.sluice.test\"} 1"
        ),
        "{metrics}"
    );
    drop(backend);
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_moves_to_the_new_address_of_a_name_with_no_failed_request() {
    let dns = DnsServer::start().await;
    // Two backends on one port, at two loopback addresses: the name moves
    // from one to the other.
    let port = free_port();
    let old = upstream::spawn("old", format!("127.0.0.2:{port}").parse().unwrap())
        .await
        .unwrap();
    let new = upstream::spawn("new", format!("127.0.0.3:{port}").parse().unwrap())
        .await
        .unwrap();
    dns.set("api.sluice.test", &[ip("127.0.0.2")]);
    let proxy = Proxy::start(&format!(
        "{}\n[placements.api]\nendpoints = [{{ address = \"api.sluice.test:{port}\" }}]\n[[routes]]\nplacement = \"api\"\n",
        resolver_table(&dns)
    ));
    assert_eq!(get(&proxy, "any.test", "/", &[]).await.served_by(), "old");

    // Four clients send requests back to back for four seconds; the name
    // moves after the first.
    let url = proxy.url("/");
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = client();
                let mut served = Vec::new();
                while started.elapsed() < Duration::from_secs(4) {
                    let response = client.get(&url).send().await.unwrap();
                    let status = response.status().as_u16();
                    let by = response
                        .headers()
                        .get("x-served-by")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    served.push((started.elapsed(), status, by));
                }
                served
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    dns.set("api.sluice.test", &[ip("127.0.0.3")]);
    let mut served = Vec::new();
    for client in clients {
        served.extend(client.await.unwrap());
    }
    let failed: Vec<_> = served
        .iter()
        .filter(|(_, status, _)| *status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(served.iter().any(|(_, _, by)| by == "old"));
    // Within two seconds of the change (a TTL of one second, and the
    // resolver's own bound of one), every request goes to the new address.
    let late: Vec<_> = served
        .iter()
        .filter(|(at, _, _)| *at > Duration::from_secs(3))
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|(_, _, by)| by == "new"),
        "still served by the old address: {:?}",
        late.iter()
            .filter(|(_, _, by)| by != "new")
            .take(5)
            .collect::<Vec<_>>()
    );
    drop((old, new));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_caddyfile_starts_with_its_backend_unresolved_and_serves_it_once_it_resolves() {
    let dns = DnsServer::start().await;
    let backend_port = free_port();
    let backend = upstream::spawn("api", format!("127.0.0.1:{backend_port}").parse().unwrap())
        .await
        .unwrap();
    let (site_port, admin_port) = (free_port(), free_port());
    let dir = crate::common::scratch_dir();
    std::fs::write(
        dir.join("Caddyfile"),
        format!(
            "{{\n\tadmin 127.0.0.1:{admin_port}\n}}\n\nhttp://api.test:{site_port} {{\n\tbind 127.0.0.1\n\trespond /health \"OK\" 200\n\treverse_proxy api-backend.sluice.test:{backend_port}\n}}\n"
        ),
    )
    .unwrap();
    let imported = Command::new(sluice_binary())
        .current_dir(&dir)
        .args(["import", "caddyfile", "Caddyfile", "-o", "sluice.toml"])
        .output()
        .unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    // Inside a container, /etc/resolv.conf names the network's DNS; here the
    // test's server stands in for it.
    let config = dir.join("sluice.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    text.push_str(&resolver_table(&dns));
    std::fs::write(&config, text).unwrap();

    let proxy = Proxy::spawn(
        format!("127.0.0.1:{site_port}").parse().unwrap(),
        format!("127.0.0.1:{admin_port}").parse().unwrap(),
        config,
        dir.join("state"),
        &[],
    );
    let health = get(&proxy, "api.test", "/health", &[]).await;
    assert_eq!((health.status, health.body.as_str()), (200, "OK"));
    assert_eq!(get(&proxy, "api.test", "/orders", &[]).await.status, 503);

    dns.set("api-backend.sluice.test", &[ip("127.0.0.1")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(&proxy, "api.test", "/orders", &[]).await;
        if reply.status == 200 {
            assert_eq!(reply.echo()["upstream"], "api");
            assert_eq!(reply.echo()["path"], "/orders");
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert!(Instant::now() < deadline, "the backend never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(backend);
}
