//! `sluice demo` answers the commands it prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{free_port, sluice_binary};

#[test]
fn demo_answers_the_commands_it_prints() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(sluice_binary())
        .args(["demo", "--listen", &listen, "--upstream-port", "0"])
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
    for command in &commands {
        let output = Command::new("sh").arg("-c").arg(command).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.starts_with("HTTP/1.1 200"), "{command}:\n{text}");
        assert!(text.contains("x-routed-to:"), "{command}:\n{text}");
        assert!(text.contains("x-route-reason:"), "{command}:\n{text}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
