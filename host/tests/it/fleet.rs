//! A fleet on etcd: a real etcd (Debian's `etcd-server`) on loopback, and
//! three `sluice run --config-url etcd://...` processes sharing its
//! config. Each instance takes its listener and admin addresses from its
//! environment, as the one config's `${LISTEN}` and `${ADMIN}` ask.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::control::etcd::EtcdSource;

use crate::common::{free_port, scratch_dir, sluice_binary, wait_accepting, Scratch};

/// A real etcd on loopback ports, its data in a scratch directory.
struct Etcd {
    child: Option<Child>,
    client: SocketAddr,
    peer: SocketAddr,
    data: Scratch,
}

impl Etcd {
    fn start() -> Etcd {
        let mut etcd = Etcd {
            child: None,
            client: SocketAddr::from(([127, 0, 0, 1], free_port())),
            peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data: scratch_dir(),
        };
        etcd.resume();
        etcd
    }

    /// Starts (or starts again) the process on the same ports and data.
    fn resume(&mut self) {
        let (client, peer) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let log = std::fs::File::create(self.data.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "fleet", "--data-dir"])
            .arg(self.data.join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("fleet={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}); install Debian's etcd-server (scripts/test.sh does)")
            });
        self.child = Some(child);
        let log = || std::fs::read_to_string(self.data.join("etcd.log")).unwrap_or_default();
        let child = self.child.as_mut().unwrap();
        wait_accepting(
            self.client,
            Duration::from_secs(20),
            || {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| format!("etcd exited with {s}"))
            },
            log,
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("etcd://{}/fleet", self.client)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `sluice run` on the fleet's config.
struct Instance {
    child: Child,
    address: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    /// Its state directory (the last known good config) and log.
    state: Option<Scratch>,
}

impl Instance {
    fn start(etcd: &Etcd) -> Instance {
        Self::start_on(etcd, scratch_dir())
    }

    /// Starts an instance whose state directory is in `state`.
    fn start_on(etcd: &Etcd, state: Scratch) -> Instance {
        let (address, admin) = (
            SocketAddr::from(([127, 0, 0, 1], free_port())),
            SocketAddr::from(([127, 0, 0, 1], free_port())),
        );
        let log = state.join(format!("sluice-{}.log", address.port()));
        let child = Command::new(sluice_binary())
            .args(["run", "--config-url", &etcd.url(), "--state-dir"])
            .arg(state.join("state"))
            .args(["--instance-name", &format!("node-{}", address.port())])
            .env("LISTEN", address.to_string())
            .env("ADMIN", admin.to_string())
            .env("RUST_LOG", "warn,sluice=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut instance = Instance {
            child,
            address,
            admin,
            log,
            state: Some(state),
        };
        let log = instance.log.clone();
        let child = &mut instance.child;
        wait_accepting(
            address,
            Duration::from_secs(30),
            || {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| format!("sluice exited with {s}"))
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        instance
    }

    /// The body of `GET /` on this instance.
    async fn answer(&self) -> String {
        match crate::common::client()
            .get(format!("http://{}/", self.address))
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(e) => format!("no answer: {e}"),
        }
    }

    /// Waits up to ten seconds for `GET /` to answer `expected`.
    async fn wait_for(&self, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.answer().await;
            if answer == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} answers {answer:?}, not {expected:?}:\n{}",
                self.address,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to fifteen seconds (a dead member's lease is ten) until
    /// `/status` lists exactly the members `names`, each on `revision` when
    /// given.
    async fn wait_for_members(&self, names: &[String], revision: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status: serde_json::Value = crate::common::client()
                .get(format!("http://{}/status", self.admin))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let members = status["fleet"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut listed: Vec<String> = members
                .iter()
                .filter(|m| revision.is_none_or(|r| m["config_revision"] == r))
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect();
            listed.sort();
            let mut wanted = names.to_vec();
            wanted.sort();
            if listed == wanted && members.len() == names.len() {
                return;
            }
            assert!(Instant::now() < deadline, "{}", status["fleet"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin API's `/config`: the config in force and the source's
    /// last error.
    async fn config_status(&self) -> serde_json::Value {
        crate::common::client()
            .get(format!("http://{}/config", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Instance {
    /// Stops the process and hands back its state directory.
    fn stop(mut self) -> Scratch {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.state.take().expect("an instance keeps its state")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config answering every request with `body`, its listener and admin
/// API where each instance's environment says.
fn config(body: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"${{LISTEN}}\"\n\n[admin]\naddress = \"${{ADMIN}}\"\n\n\
         [[routes]]\nname = \"all\"\nrespond = {{ status = 200, body = \"{body}\" }}\n"
    )
}

/// Runs `sluice config push` of `text` to `etcd`, with `extra` arguments;
/// its exit status and output.
fn push(etcd: &Etcd, text: &str, extra: &[&str]) -> (bool, String) {
    let dir = scratch_dir();
    let file = dir.join("sluice.toml");
    std::fs::write(&file, text).unwrap();
    // The file is checked as an instance would load it, with its
    // environment.
    let output = Command::new(sluice_binary())
        .args(["config", "push", "--etcd", &etcd.url()])
        .env("LISTEN", "127.0.0.1:1")
        .env("ADMIN", "127.0.0.1:2")
        .args(extra)
        .arg(&file)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_config_reaches_every_instance_and_an_invalid_one_is_refused() {
    let etcd = Etcd::start();
    let (pushed, output) = push(&etcd, &config("first"), &[]);
    assert!(pushed, "{output}");
    let fleet: Vec<Instance> = (0..3).map(|_| Instance::start(&etcd)).collect();
    for instance in &fleet {
        instance.wait_for("first").await;
    }

    // A change is pushed by etcd's watch, not polled.
    let (pushed, output) = push(&etcd, &config("second"), &[]);
    assert!(pushed, "{output}");
    for instance in &fleet {
        instance.wait_for("second").await;
    }
    let revision = output
        .rsplit("revision ")
        .next()
        .unwrap()
        .trim()
        .trim_end_matches(')')
        .to_string();
    // Every member lists all three, each on the pushed revision.
    let names: Vec<String> = fleet
        .iter()
        .map(|i| format!("node-{}", i.address.port()))
        .collect();
    for instance in &fleet {
        instance.wait_for_members(&names, Some(&revision)).await;
    }
    let metrics = crate::common::client()
        .get(format!("http://{}/metrics", fleet[0].admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in &names {
        assert!(
            metrics.contains(&format!(
                "sluice_fleet_member{{config_revision=\"{revision}\",member=\"{name}\""
            )),
            "{metrics}"
        );
    }

    // An invalid file is refused before anything is written.
    let (pushed, output) = push(&etcd, &format!("{}\nbogus_key = 1\n", config("third")), &[]);
    assert!(!pushed, "{output}");
    assert!(output.contains(":11: routes[0].bogus_key"), "{output}");
    assert!(output.contains("nothing was pushed"), "{output}");

    // A push based on a revision that is no longer current is refused.
    let (pushed, output) = push(&etcd, &config("stale"), &["--expect-revision", "1"]);
    assert!(!pushed, "{output}");
    assert!(output.contains("changed since you read it"), "{output}");

    // An invalid config written to etcd by other means keeps the last
    // known good serving, and every instance says why.
    let source = EtcdSource::parse(&etcd.url(), None, None).unwrap();
    let mut client = source.connect().await.unwrap();
    let (_, revision) = source.read(&mut client).await.unwrap().unwrap();
    source
        .compare_and_swap(&mut client, revision, "[[routes]\nbroken")
        .await
        .unwrap();
    for instance in &fleet {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = instance.config_status().await;
            if status["last_error"].is_string() {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(instance.answer().await, "second");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_stopped_instances_keep_serving_restart_on_the_last_known_good_and_converge() {
    let mut etcd = Etcd::start();
    let (pushed, output) = push(&etcd, &config("before"), &[]);
    assert!(pushed, "{output}");
    let mut fleet: Vec<Instance> = (0..3).map(|_| Instance::start(&etcd)).collect();
    for instance in &fleet {
        instance.wait_for("before").await;
    }

    etcd.stop();
    // Every instance notices, keeps serving, and says so.
    for instance in &fleet {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = instance.config_status().await;
            if status["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("etcd://"))
            {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(instance.answer().await, "before");
    }
    // One restarts while etcd is away: on the config it last applied.
    let state = fleet.pop().unwrap().stop();
    let restarted = Instance::start_on(&etcd, state);
    restarted.wait_for("before").await;
    fleet.push(restarted);

    etcd.resume();
    let (pushed, output) = push(&etcd, &config("after"), &[]);
    assert!(pushed, "{output}");
    for instance in &fleet {
        instance.wait_for("after").await;
    }
    // The stopped instance's lease runs out: it leaves the members.
    let names: Vec<String> = fleet
        .iter()
        .map(|i| format!("node-{}", i.address.port()))
        .collect();
    for instance in &fleet {
        instance.wait_for_members(&names, None).await;
    }
}
