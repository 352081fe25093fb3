//! The image `cargo xtask image` builds (a static manager in `FROM scratch`) runs here with podman
//! against the local apiserver: /readyz turns 200 and a sample is reconciled. The image has no CA
//! store, no shell and no libc, so this also guards the root-CA fix and the static link.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use capstan_e2e::{http::readyz_status, run, scenarios::wait_for, skip_without};
use capstan_foo::{Foo, FooSpec};
use capstan_testenv::ControlPlane;
use kube::{Api, api::PostParams};

const TEST: &str = "the_scratch_image_runs_against_the_local_apiserver";
const IMAGE: &str = concat!("localhost/capstan-manager:", env!("CARGO_PKG_VERSION"));

/// podman as these machines need it (runc, cgroupfs; explicit rlimits at run).
fn podman() -> Command {
    let mut command = Command::new("podman");
    command.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]);
    command
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A copy of the control plane's kubeconfig and CA, readable by the image's non-root user, with
/// the CA path rewritten to where the directory is mounted (`/config`).
fn container_config(control_plane: &ControlPlane, dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("config dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let kubeconfig = std::fs::read_to_string(control_plane.kubeconfig_path()).expect("kubeconfig");
    let mut rewritten = Vec::new();
    for line in kubeconfig.lines() {
        match line.split_once("certificate-authority:") {
            Some((indent, ca)) => {
                std::fs::copy(ca.trim().trim_matches('"'), dir.join("ca.crt")).expect("copy the CA");
                rewritten.push(format!("{indent}certificate-authority: /config/ca.crt"));
            }
            None => rewritten.push(line.to_owned()),
        }
    }
    std::fs::write(dir.join("kubeconfig"), rewritten.join("\n")).expect("write kubeconfig");
    for file in ["kubeconfig", "ca.crt"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    dir.to_path_buf()
}

#[tokio::test]
async fn the_scratch_image_runs_against_the_local_apiserver() {
    if !on_path("podman") {
        skip_without(TEST, "podman is not installed (Debian: apt-get install podman)");
        return;
    }
    let archive = capstan_e2e::workspace_root().join("target/image/capstan-manager.oci.tar");
    let present = podman()
        .args(["image", "exists", IMAGE])
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        if !archive.is_file() {
            skip_without(
                TEST,
                &format!("no image {IMAGE} and no {}: run `cargo xtask image`", archive.display()),
            );
            return;
        }
        run(podman().args(["load", "--input"]).arg(&archive)).expect("podman load");
    }

    let control_plane = ControlPlane::shared();
    let client = control_plane.client().await;
    control_plane
        .apply_crds(&client, &capstan_manager::crds())
        .await
        .expect("CRDs");
    let namespace = control_plane.namespace(&client, "image").await.expect("namespace");
    let config = container_config(
        control_plane,
        &std::env::temp_dir().join(format!("capstan-image-config-{}", std::process::id())),
    );
    let health = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let health_addr = health.local_addr().expect("addr");
    drop(health);
    let name = format!("capstan-image-test-{}", std::process::id());
    let started = Instant::now();
    let container = run(podman()
        .args(["run", "--detach", "--name", &name, "--network", "host"])
        .args(["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=1024:1024"])
        .arg("--volume")
        .arg(format!("{}:/config:ro", config.display()))
        .args([
            "--env",
            "KUBECONFIG=/config/kubeconfig",
            "--env",
            "RUST_LOG=info",
            IMAGE,
        ])
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--health-addr",
            &health_addr.to_string(),
        ]))
    .expect("podman run");
    struct Cleanup(String, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Ok(logs) = run(podman().args(["logs", &self.0])) {
                eprintln!("container log:\n{logs}");
            }
            let _ = podman().args(["rm", "--force", &self.0]).output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let _cleanup = Cleanup(name.clone(), config);
    println!("container {container}");

    wait_for("the image's /readyz answers 200", Duration::from_secs(60), || {
        let name = name.clone();
        async move {
            let running = run(podman().args(["inspect", "--format", "{{.State.Running}}", &name]))?;
            anyhow::ensure!(running == "true", "the container exited (see its log)");
            Ok(matches!(readyz_status(health_addr).await, Some(200)).then_some(()))
        }
    })
    .await
    .expect("ready");
    println!("ready {:.1}s after podman run", started.elapsed().as_secs_f64());

    // The sample Foo turns happy once its friend Pod exists (no node needed: it only has to exist).
    let foos: Api<Foo> = Api::namespaced(client.clone(), &namespace);
    foos.create(
        &PostParams::default(),
        &Foo::new("foo-01", FooSpec { name: "jack".into() }),
    )
    .await
    .expect("create foo-01");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    pods.create(
        &PostParams::default(),
        &capstan_e2e::scenarios::sleeping_pod("jack", "busybox:1.36"),
    )
    .await
    .expect("create jack");
    wait_for(
        "foo-01 is happy, reconciled by the containerized manager",
        Duration::from_secs(30),
        || {
            let foos = foos.clone();
            async move { Ok(foos.get("foo-01").await?.status.filter(|s| s.happy).map(|_| ())) }
        },
    )
    .await
    .expect("reconciled");
}
