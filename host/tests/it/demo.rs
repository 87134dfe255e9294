//! `sluice demo` answers the commands it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, sluice_binary};

#[test]
fn demo_answers_the_commands_it_prints() {
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(sluice_binary())
        .args([
            "demo",
            "--listen",
            &listen,
            "--upstream-port",
            "0",
            "--admin",
            &admin,
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut commands = Vec::new();
    let mut printed = String::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("curl ") {
            commands.push(line.clone());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(
        commands.len() >= 3,
        "the demo printed too few commands:\n{printed}"
    );
    assert!(printed.contains("x-route-reason: table"), "{printed}");
    assert!(!printed.contains("request failed"), "{printed}");
    assert!(
        printed.contains("x-failover-reason: unhealthy"),
        "the demo shows a failover:\n{printed}"
    );
    let mut stopped = false;
    for command in &commands {
        let run = || {
            String::from_utf8_lossy(
                &Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .into_owned()
        };
        if command.contains("-X POST") {
            let text = run();
            stopped = command.contains("/stop/");
            assert!(
                text.contains(if stopped { "stopped" } else { "started" }),
                "{command}: {text}"
            );
            continue;
        }
        // After a stop or start, health checks take a moment to notice.
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = run();
            let settled = text.contains("x-failover-reason") == stopped;
            if (text.starts_with("HTTP/1.1 200") && settled) || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(text.starts_with("HTTP/1.1 200"), "{command}:\n{text}");
        assert!(text.contains("x-routed-to:"), "{command}:\n{text}");
        assert!(text.contains("x-route-reason:"), "{command}:\n{text}");
        assert_eq!(
            text.contains("x-failover-reason: unhealthy"),
            stopped,
            "{command}:\n{text}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
