//! The harness itself: a port another process holds is reported, never
//! mistaken for the proxy's.

use std::net::{SocketAddr, TcpListener};

use crate::common::{free_port, render, scratch_dir, Proxy};

#[test]
fn a_port_another_process_holds_is_reported_not_taken_for_the_proxy() {
    let thief = TcpListener::bind("127.0.0.1:0").unwrap();
    let held = thief.local_addr().unwrap();
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = scratch_dir();
    let config_path = dir.join("sluice.toml");
    let body = "[[routes]]\nrespond = { body = \"hi\" }\n";
    std::fs::write(&config_path, render(held, admin, body)).unwrap();
    let started = std::panic::catch_unwind(|| {
        Proxy::spawn(held, admin, config_path.clone(), dir.join("state"), &[])
    });
    let message = match started {
        Ok(_) => panic!("the proxy was taken to listen on {held}, which another socket holds"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains(&format!("another process holds {held}")),
        "{message}"
    );
    drop(thief);
}
