//! The manager trusts the cluster CA from its kubeconfig (or service account) and nothing else, so
//! it runs where there is no system trust store at all: a `FROM scratch` image. Here the system
//! store is emptied through rustls-native-certs' own overrides (`SSL_CERT_FILE`, `SSL_CERT_DIR`).
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use capstan_testenv::{ControlPlane, http_get};

/// Runs the manager with an empty system trust store and `kubeconfig` until /readyz answers 200;
/// returns how long that took. Panics with the manager's exit if it gives up instead.
async fn ready_without_system_roots(kubeconfig: &std::path::Path, label: &str) -> Duration {
    let empty = std::env::temp_dir().join(format!("capstan-no-roots-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("an empty certificate directory");
    let empty_bundle = empty.join("no-roots.pem");
    std::fs::write(&empty_bundle, "").expect("an empty certificate bundle");

    let health = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let health_addr = health.local_addr().expect("addr");
    drop(health);
    let mut manager = Command::new(env!("CARGO_BIN_EXE_capstan-manager"))
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--health-addr"])
        .arg(health_addr.to_string())
        .env("KUBECONFIG", kubeconfig)
        .env("SSL_CERT_FILE", &empty_bundle)
        .env("SSL_CERT_DIR", &empty)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start capstan-manager");
    let stderr = manager.stderr.take().expect("stderr");
    let prefix = format!("  manager[{label}]| ");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{prefix}{line}");
        }
    });

    let started = Instant::now();
    let ready = loop {
        if let Some(exit) = manager.try_wait().expect("wait") {
            let _ = std::fs::remove_dir_all(&empty);
            panic!("{label}: the manager exited ({exit}) with an empty system trust store: see its log above");
        }
        if let Ok((200, _)) = http_get(health_addr, "/readyz").await {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{label}: /readyz did not turn 200 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = manager.kill();
    let _ = manager.wait();
    let _ = std::fs::remove_dir_all(&empty);
    ready
}

#[tokio::test]
async fn the_manager_needs_no_system_trust_store() {
    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    control_plane
        .apply_crds(&client, &capstan_manager::crds())
        .await
        .expect("CRDs");

    // The kubeconfig's own CA: all the manager trusts.
    let took = ready_without_system_roots(control_plane.kubeconfig_path(), "ca").await;
    println!("ready in {took:?} with the kubeconfig's CA and no system CA certificates");

    // insecure-skip-tls-verify and no CA: kube would build (and fail) a system-store verifier only
    // to replace it; the manager must not need one.
    let kubeconfig = std::fs::read_to_string(control_plane.kubeconfig_path()).expect("kubeconfig");
    let insecure: String = kubeconfig
        .lines()
        .map(|line| match line.find("certificate-authority:") {
            Some(at) => format!("{}insecure-skip-tls-verify: true", &line[..at]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(insecure.contains("insecure-skip-tls-verify: true"), "{insecure}");
    let path = std::env::temp_dir().join(format!("capstan-insecure-kubeconfig-{}", std::process::id()));
    std::fs::write(&path, insecure).expect("write the kubeconfig");
    let took = ready_without_system_roots(&path, "insecure").await;
    let _ = std::fs::remove_file(&path);
    println!("ready in {took:?} with insecure-skip-tls-verify and no system CA certificates");
}
