//! Opt-in per test: Pods that really run, through `capstan-localnode`, on the shared control plane.
//! Without a local node Pods stay Pending; tests that need a workload (memcached answering, Redis
//! replicating) ask for one with [`ControlPlane::shared_local_node`].
use capstan_localnode::{Error, LocalNode, LocalNodeConfig, check_prerequisites};
use std::{
    path::PathBuf,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use crate::{ControlPlane, process};

static NODE: OnceLock<Result<LocalNode, String>> = OnceLock::new();
/// Image table entries for the shared node, set before it starts ([`ControlPlane::shared_local_node_with_images`]).
static IMAGES: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());

/// How long a test binary waits for another one's local node to stop (one agent per host).
const LOCK_WAIT: Duration = Duration::from_secs(20 * 60);

/// Whether a local node can run on this machine. When it cannot, the test should return early:
/// this prints `SKIPPED <test>: <what is missing>`; under `CI=true` a missing prerequisite is a
/// failure instead (a panic naming it), never a silent skip.
pub fn local_node_available(test: &str) -> bool {
    match check_prerequisites() {
        Ok(()) => true,
        Err(missing) => {
            let message = format!("{test}: the local node cannot run here: {}", missing.join("; "));
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{message} (CI=true: a missing prerequisite is a failure; `cargo xtask test` installs them)"
            );
            eprintln!("SKIPPED {message}");
            false
        }
    }
}

impl ControlPlane {
    /// [`ControlPlane::shared_local_node`] whose image table also maps these prefixes to host
    /// binaries (`LocalNodeConfig::images`), e.g. `("capstan-manager", <built binary>)` so a
    /// chart's operator Pod runs the locally built manager. The shared node starts once per test
    /// binary: the images must be given by its first user; a later call with other images panics.
    pub fn shared_local_node_with_images(images: Vec<(String, PathBuf)>) -> &'static LocalNode {
        if NODE.get().is_none()
            && let Ok(mut configured) = IMAGES.lock()
        {
            *configured = images.clone();
        }
        let node = ControlPlane::shared_local_node();
        let configured = IMAGES.lock().map(|images| images.clone()).unwrap_or_default();
        assert!(
            configured == images,
            "the shared local node already runs with images {configured:?}, not {images:?}"
        );
        node
    }

    /// The local node of [`ControlPlane::shared`], started on first use and stopped when the test
    /// binary exits (before the control plane, so its Node and Pod objects can be removed).
    /// Check [`local_node_available`] first. While another process's local node runs (one per
    /// host), this waits for it, up to 20 minutes, saying so. Panics with the agent's error if the
    /// node cannot start.
    pub fn shared_local_node() -> &'static LocalNode {
        let control_plane = ControlPlane::shared();
        let node = NODE.get_or_init(|| {
            let mut config = LocalNodeConfig::new(control_plane.kubeconfig_path());
            config.images = IMAGES.lock().map(|images| images.clone()).unwrap_or_default();
            // Crash-loop tests should take seconds; the kubelet's 10 s is kept for `cargo xtask dev`.
            config.backoff_initial = Duration::from_secs(1);
            let started = std::time::Instant::now();
            // The agent runs on its own thread; this runtime only drives its start, and a fresh
            // thread keeps it clear of whatever runtime the calling test uses.
            let result = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                // One agent per host: another test binary's node holds the lock; queue behind it.
                let waiting_since = std::time::Instant::now();
                let mut said = false;
                loop {
                    match runtime.block_on(LocalNode::start(config.clone())) {
                        Err(Error::AlreadyRunning { lock }) if waiting_since.elapsed() < LOCK_WAIT => {
                            if !said {
                                eprintln!(
                                    "capstan-testenv: another local node holds {}; waiting up to {} min for it",
                                    lock.display(),
                                    LOCK_WAIT.as_secs() / 60
                                );
                                said = true;
                            }
                            std::thread::sleep(Duration::from_secs(2));
                        }
                        other => {
                            if said {
                                eprintln!(
                                    "capstan-testenv: waited {:.0}s for the local node lock",
                                    waiting_since.elapsed().as_secs_f64()
                                );
                            }
                            return other.map_err(|e| e.to_string());
                        }
                    }
                }
            })
            .join()
            .unwrap_or_else(|_| Err("the local node's start panicked".to_owned()));
            if result.is_ok() {
                eprintln!(
                    "capstan-testenv: local node ready in {:.2}s",
                    started.elapsed().as_secs_f64()
                );
                // Registered after the control plane's hook, so it runs first.
                process::at_exit(stop_shared_node);
            }
            result
        });
        match node {
            Ok(node) => node,
            Err(message) => panic!("capstan-testenv: the local node did not start: {message}"),
        }
    }
}

extern "C" fn stop_shared_node() {
    if let Some(Ok(node)) = NODE.get() {
        node.stop_blocking();
    }
}
