use std::{
    env, fmt,
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, MutexGuard, OnceLock, TryLockError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use secrecy::SecretString;
use tempfile::TempDir;

use crate::{
    Error, api,
    assets::{self, Assets},
    certs, process, random,
};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(60);
const CRD_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);
const LOG_TAIL_LINES: usize = 40;
/// Temp dirs are named `<prefix><pid>-<random>`, so a later run can tell which ones belong to a
/// process that is gone (killed before it could clean up) and remove them.
const DIR_PREFIX: &str = "capstan-testenv-";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Set to keep the temp dir (logs, kubeconfig, certificates) after the control plane stops.
const KEEP_ENV: &str = "CAPSTAN_TESTENV_KEEP";
/// A kept temp dir holds this file, which tells the stale-dir sweep to leave it alone.
const KEPT_MARKER: &str = "KEPT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Component {
    Etcd = 0,
    KubeApiserver = 1,
    KubeControllerManager = 2,
}

impl Component {
    const ALL: [Component; 3] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
    ];

    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
        }
    }

    fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// How to (re)start one component: kept so the apiserver can be restarted with identical flags.
#[derive(Debug)]
struct Launch {
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// Knobs for [`ControlPlane::start`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write the apiserver's audit log: one JSON line per request at level Metadata (verb, URI,
    /// user, `userAgent`, response code), logged once when the response completes (and once more
    /// when a watch's response starts). Its path is [`ControlPlane::audit_log_path`].
    pub audit_log: bool,
}

/// A real etcd, kube-apiserver and kube-controller-manager on loopback ports, with their files in
/// a temp dir. No scheduler and no kubelet: Pods stay Pending.
///
/// Dropping it stops every process it started and removes its files.
pub struct ControlPlane {
    server_url: String,
    server_uri: http::Uri,
    admin_token: String,
    ca_cert_der: Vec<u8>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    audit_log: Option<PathBuf>,
    launches: [Launch; 3],
    processes: [Mutex<Option<Child>>; 3],
    temp_dirs: Mutex<Vec<TempDir>>,
    /// Set when startup fails, so the log paths in the error stay readable afterwards.
    keep_files: AtomicBool,
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

impl ControlPlane {
    /// Starts a fresh control plane and waits until it serves requests and its controller-manager
    /// has made the `default` namespace usable for Pods. Blocking; inside async code call it from
    /// `spawn_blocking` (or accept blocking the test's runtime for a few seconds).
    pub fn start(opts: Options) -> Result<ControlPlane, Error> {
        let assets = assets::locate()?;
        remove_stale_dirs();
        let started = Instant::now();
        let control_plane = match Self::start_once(&assets, &opts) {
            Err(e) if e.is_port_clash() => {
                eprintln!("capstan-testenv: a port was taken meanwhile, retrying with fresh ports");
                Self::start_once(&assets, &opts)?
            }
            other => other?,
        };
        eprintln!(
            "capstan-testenv: control plane ready in {:.2}s at {} (files in {})",
            started.elapsed().as_secs_f64(),
            control_plane.server_url,
            control_plane.dir.display()
        );
        Ok(control_plane)
    }

    /// One control plane per test binary, started on first use with the audit log on, stopped when
    /// the binary exits. Panics with the full startup error, for every test that asks, if it cannot
    /// start.
    pub fn shared() -> &'static ControlPlane {
        let shared = SHARED.get_or_init(|| {
            let started = ControlPlane::start(Options { audit_log: true }).map_err(|e| e.to_string());
            if started.is_ok() {
                process::at_exit(stop_shared);
            }
            started
        });
        match shared {
            Ok(control_plane) => control_plane,
            Err(message) => {
                panic!("capstan-testenv: the shared control plane did not start: {message}")
            }
        }
    }

    fn start_once(assets: &Assets, opts: &Options) -> Result<ControlPlane, Error> {
        let prefix = format!("{DIR_PREFIX}{}-", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .map_err(io_error("the temp dir", env::temp_dir()))?;
        // etcd fsyncs on every write; on tmpfs that costs nothing.
        let etcd_dir = tempfile::Builder::new().prefix(&prefix).tempdir_in("/dev/shm").ok();
        let etcd_data = match &etcd_dir {
            Some(d) => d.path().join("data"),
            None => dir.path().join("etcd-data"),
        };
        let path = dir.path().to_path_buf();
        let file = |name: &str| path.join(name);

        let [etcd_client_port, etcd_peer_port, apiserver_port] = free_ports()?;
        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let server_uri: http::Uri = server_url
            .parse()
            .map_err(|e| Error::Invalid(format!("server URL {server_url}: {e}")))?;
        let admin_token = format!("{:016x}{:016x}", random::random_u64(), random::random_u64());

        let pki = certs::generate()?;
        write(&file("ca.crt"), &pki.ca_cert_pem, "the CA certificate")?;
        write(&file("apiserver.crt"), &pki.serving_cert_pem, "the serving certificate")?;
        write(&file("apiserver.key"), &pki.serving_key_pem, "the serving key")?;
        write(&file("sa.key"), &pki.service_account_key_pem, "the service-account key")?;
        write(
            &file("sa.pub"),
            &pki.service_account_public_pem,
            "the service-account public key",
        )?;
        write(
            &file("tokens.csv"),
            &format!("{admin_token},admin,admin,\"system:masters\"\n"),
            "the token file",
        )?;
        let kubeconfig = file("kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_yaml(&server_url, &file("ca.crt"), &admin_token),
            "the kubeconfig",
        )?;

        let etcd_client = format!("http://127.0.0.1:{etcd_client_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=default".to_owned(),
            format!("--data-dir={}", etcd_data.display()),
            format!("--listen-client-urls={etcd_client}"),
            format!("--advertise-client-urls={etcd_client}"),
            format!("--listen-peer-urls={etcd_peer}"),
            format!("--initial-advertise-peer-urls={etcd_peer}"),
            format!("--initial-cluster=default={etcd_peer}"),
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
            "--log-level=warn".to_owned(),
        ];

        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_client}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={apiserver_port}"),
            format!("--cert-dir={}", path.display()),
            format!("--tls-cert-file={}", file("apiserver.crt").display()),
            format!("--tls-private-key-file={}", file("apiserver.key").display()),
            format!("--token-auth-file={}", file("tokens.csv").display()),
            "--authorization-mode=RBAC".to_owned(),
            "--allow-privileged=true".to_owned(),
            format!("--service-cluster-ip-range={}", certs::SERVICE_CLUSTER_IP_RANGE),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", file("sa.pub").display()),
            format!("--service-account-signing-key-file={}", file("sa.key").display()),
        ];
        let audit_log = if opts.audit_log {
            let policy = file("audit-policy.yaml");
            write(&policy, AUDIT_POLICY, "the audit policy")?;
            let log = file("audit.log");
            apiserver_args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", log.display()),
                "--audit-log-format=json".to_owned(),
            ]);
            Some(log)
        } else {
            None
        };

        let controller_manager_args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            // Without these two the token controller makes no token Secrets, and the
            // ServiceAccount admission then refuses every Pod.
            format!("--service-account-private-key-file={}", file("sa.key").display()),
            format!("--root-ca-file={}", file("ca.crt").display()),
            "--leader-elect=false".to_owned(),
            "--use-service-account-credentials=false".to_owned(),
            // Port 0 switches both serving endpoints off, so control planes can run side by side.
            "--port=0".to_owned(),
            "--secure-port=0".to_owned(),
        ];

        let launch = |component: Component, binary: &Path, args: Vec<String>| Launch {
            binary: binary.to_path_buf(),
            args,
            log: file(&format!("{}.log", component.name())),
        };
        let mut temp_dirs = Vec::from_iter(etcd_dir);
        temp_dirs.push(dir);
        // Built before anything runs, so an early return drops it and stops what did start.
        let control_plane = ControlPlane {
            server_url,
            server_uri,
            admin_token,
            ca_cert_der: pki.ca_cert_der,
            dir: path.clone(),
            kubeconfig,
            audit_log,
            launches: [
                launch(Component::Etcd, &assets.etcd, etcd_args),
                launch(Component::KubeApiserver, &assets.kube_apiserver, apiserver_args),
                launch(
                    Component::KubeControllerManager,
                    &assets.kube_controller_manager,
                    controller_manager_args,
                ),
            ],
            processes: Default::default(),
            temp_dirs: Mutex::new(temp_dirs),
            keep_files: AtomicBool::new(false),
        };

        // The apiserver retries etcd on its own, so both start at once. The controller-manager
        // gives up if the apiserver is not healthy within seconds, so it waits its turn.
        if let Err(error) = control_plane.boot() {
            control_plane.keep_files.store(true, Ordering::Relaxed);
            return Err(error);
        }
        Ok(control_plane)
    }

    fn boot(&self) -> Result<(), Error> {
        let started = Instant::now();
        self.launch(Component::Etcd)?;
        self.launch(Component::KubeApiserver)?;
        self.wait_apiserver_ready()?;
        let apiserver_ready = started.elapsed();
        self.launch(Component::KubeControllerManager)?;
        self.wait_controller_manager_ready()?;
        eprintln!(
            "capstan-testenv: kube-apiserver ready after {:.2}s, kube-controller-manager {:.2}s later",
            apiserver_ready.as_secs_f64(),
            (started.elapsed() - apiserver_ready).as_secs_f64()
        );
        Ok(())
    }

    /// A kubeconfig for the admin identity (group `system:masters`), usable by kubectl and by
    /// `kube::Config`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A new admin client bound to the calling tokio runtime. Each `#[tokio::test]` has a runtime of
    /// its own and a client dies with its runtime, so never keep one in a `static`.
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config())
            .expect("a client for the local control plane (a TLS setup bug in capstan-testenv)")
    }

    /// The admin identity as a `kube::Config`, to build clients with custom layers.
    pub fn kube_config(&self) -> kube::Config {
        self.kube_config_for_token(&self.admin_token)
    }

    /// A `kube::Config` that authenticates with `token`, e.g. one from [`ControlPlane::token_for`].
    pub fn kube_config_for_token(&self, token: &str) -> kube::Config {
        let mut config = kube::Config::new(self.server_uri.clone());
        config.root_cert = Some(vec![self.ca_cert_der.clone()]);
        config.auth_info.token = Some(SecretString::from(token.to_owned()));
        config
    }

    /// A new client that authenticates with `token`, for RBAC checks.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client, Error> {
        Ok(kube::Client::try_from(self.kube_config_for_token(token))?)
    }

    /// `https://127.0.0.1:PORT`
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The apiserver's audit log, when [`Options::audit_log`] was set (always for [`shared`]).
    ///
    /// [`shared`]: ControlPlane::shared
    pub fn audit_log_path(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// Creates a namespace `<prefix>-<random>` and waits until Pods can be created in it (its
    /// `default` ServiceAccount and that account's token Secret exist, and a dry-run Pod create is
    /// admitted). Returns its name. The requests go through `client`, so they show up in the audit
    /// log under its user agent.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> Result<String, Error> {
        let name = api::create_namespace(client, prefix).await?;
        api::wait_pods_admitted(client, &name, NAMESPACE_TIMEOUT, || {
            self.exited(Component::KubeControllerManager)
        })
        .await?;
        Ok(name)
    }

    /// Server-side applies the CRDs (field manager `capstan-testenv`) and waits until each one is
    /// Established.
    pub async fn apply_crds(&self, client: &kube::Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
        api::apply_crds(client, crds, CRD_TIMEOUT).await
    }

    /// A token for `namespace/service_account` from the TokenRequest API, requested with `client`
    /// (which needs `create` on `serviceaccounts/token`). Turn it into a client with
    /// [`ControlPlane::client_for_token`].
    pub async fn token_for(
        &self,
        client: &kube::Client,
        namespace: &str,
        service_account: &str,
    ) -> Result<String, Error> {
        api::service_account_token(client, namespace, service_account).await
    }

    /// Stops the apiserver (etcd and the controller-manager keep running), for fault tests.
    pub fn stop_apiserver(&self) {
        let child = self.lock(Component::KubeApiserver).take();
        if let Some(mut child) = child {
            process::terminate(&mut [&mut child], STOP_GRACE);
        }
    }

    /// Starts the apiserver again on the same address, with the same etcd and credentials, and waits
    /// until it is ready. Does nothing if it is running.
    pub fn start_apiserver(&self) -> Result<(), Error> {
        if self.exited(Component::KubeApiserver).is_none() {
            return Ok(());
        }
        self.launch(Component::KubeApiserver)?;
        self.wait_apiserver_ready()
    }

    /// The last `lines` lines of a component's log: `etcd`, `kube-apiserver` or
    /// `kube-controller-manager`.
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        match Component::from_name(component) {
            Some(c) => tail(&self.launches[c as usize].log, lines),
            None => {
                format!("no component {component:?}; expected one of etcd, kube-apiserver, kube-controller-manager")
            }
        }
    }

    /// The pid of a running component (names as for [`ControlPlane::log_tail`]).
    pub fn pid(&self, component: &str) -> Option<u32> {
        let component = Component::from_name(component)?;
        self.lock(component).as_ref().map(Child::id)
    }

    fn launch(&self, component: Component) -> Result<(), Error> {
        let launch = &self.launches[component as usize];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(io_error("a log file", launch.log.clone()))?;
        let stderr = log.try_clone().map_err(io_error("a log file", launch.log.clone()))?;
        let mut command = Command::new(&launch.binary);
        command
            .args(&launch.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let child = process::spawn(command).map_err(|source| Error::Spawn {
            component: component.name(),
            binary: launch.binary.clone(),
            source,
        })?;
        *self.lock(component) = Some(child);
        Ok(())
    }

    /// `Some(error with the log tail)` if the component is not running.
    fn exited(&self, component: Component) -> Option<Error> {
        let status = match self.lock(component).as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return None,
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("cannot tell: {e}"),
            None => "not running".to_owned(),
        };
        Some(Error::Exited {
            component: component.name(),
            status,
            log: self.launches[component as usize].log.clone(),
            tail: tail(&self.launches[component as usize].log, LOG_TAIL_LINES),
        })
    }

    fn not_ready(&self, component: Component, waited: Duration, detail: String) -> Error {
        Error::NotReady {
            component: component.name(),
            waited,
            detail,
            log: self.launches[component as usize].log.clone(),
            tail: tail(&self.launches[component as usize].log, LOG_TAIL_LINES),
        }
    }

    fn wait_apiserver_ready(&self) -> Result<(), Error> {
        let mut config = self.kube_config();
        // Each probe must fail fast: the loop retries, the client must not.
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(1));
        config.read_timeout = Some(Duration::from_secs(2));
        block_on_isolated(async move {
            let client = kube::Client::try_from(config)?;
            let started = Instant::now();
            loop {
                for component in [Component::Etcd, Component::KubeApiserver] {
                    if let Some(error) = self.exited(component) {
                        return Err(error);
                    }
                }
                let request = http::Request::get("/readyz?verbose")
                    .body(Vec::new())
                    .map_err(|e| Error::Invalid(format!("readiness request: {e}")))?;
                let last = match client.request_text(request).await {
                    Ok(_) => return Ok(()),
                    Err(e) => e.to_string(),
                };
                if started.elapsed() > STARTUP_TIMEOUT {
                    let culprit = if last.contains("[-]etcd") {
                        Component::Etcd
                    } else {
                        Component::KubeApiserver
                    };
                    return Err(self.not_ready(culprit, started.elapsed(), format!("last /readyz answer: {last}")));
                }
                tokio::time::sleep(POLL).await;
            }
        })?
    }

    fn wait_controller_manager_ready(&self) -> Result<(), Error> {
        let config = self.kube_config();
        block_on_isolated(async move {
            let client = kube::Client::try_from(config)?;
            let started = Instant::now();
            api::wait_pods_admitted(&client, "default", STARTUP_TIMEOUT, || {
                self.exited(Component::KubeControllerManager)
            })
            .await
            .map_err(|e| match e {
                Error::Timeout { .. } => {
                    self.not_ready(Component::KubeControllerManager, started.elapsed(), e.to_string())
                }
                other => other,
            })
        })?
    }

    fn lock(&self, component: Component) -> MutexGuard<'_, Option<Child>> {
        capstan_localnode::lock(&self.processes[component as usize])
    }

    /// Stops every process and removes the files. Takes no lock it would wait for, because it also
    /// runs at process exit, when another thread may have been stopped holding one.
    fn shutdown(&self, grace: Duration) {
        let mut guards: Vec<_> = self
            .processes
            .iter()
            .rev()
            .filter_map(|p| match p.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            })
            .collect();
        let mut children: Vec<&mut Child> = guards.iter_mut().filter_map(|g| g.as_mut()).collect();
        process::terminate(&mut children, grace);
        drop(children);
        for guard in &mut guards {
            guard.take();
        }
        drop(guards);

        let temp_dirs = match self.temp_dirs.try_lock() {
            Ok(mut dirs) => std::mem::take(&mut *dirs),
            Err(TryLockError::Poisoned(e)) => std::mem::take(&mut *e.into_inner()),
            Err(TryLockError::WouldBlock) => Vec::new(),
        };
        let keep =
            self.keep_files.load(Ordering::Relaxed) || env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        for dir in temp_dirs {
            // etcd's data is of no use afterwards and lives in memory: it always goes.
            if keep && dir.path() == self.dir {
                let path = dir.keep();
                let _ = fs::write(
                    path.join(KEPT_MARKER),
                    "kept for inspection; capstan-testenv never removes this directory\n",
                );
                eprintln!("capstan-testenv: kept {}", path.display());
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown(STOP_GRACE);
    }
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server_url", &self.server_url)
            .field("dir", &self.dir)
            .field("audit_log", &self.audit_log)
            .finish_non_exhaustive()
    }
}

extern "C" fn stop_shared() {
    if let Some(Ok(control_plane)) = SHARED.get() {
        // Nothing outlives the process, so a graceful stop would only delay the test binary's exit.
        control_plane.shutdown(Duration::ZERO);
    }
}

/// Level Metadata for everything; the RequestReceived stage is omitted so each request is logged
/// once, which is what counting writes needs.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages:
  - RequestReceived
rules:
  - level: Metadata
";

fn kubeconfig_yaml(server_url: &str, ca_file: &Path, token: &str) -> String {
    // JSON strings are valid YAML scalars and need no escaping rules of our own.
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    format!(
        "\
apiVersion: v1
kind: Config
clusters:
  - name: capstan-testenv
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: admin
    user:
      token: {token}
contexts:
  - name: capstan-testenv
    context:
      cluster: capstan-testenv
      user: admin
      namespace: default
current-context: capstan-testenv
",
        server = quote(server_url),
        ca = quote(&ca_file.display().to_string()),
        token = quote(token),
    )
}

/// Distinct free loopback ports. All listeners stay open until every port is picked, so the same
/// port cannot be handed out twice.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Port)?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(Error::Port)?.port();
    }
    Ok(ports)
}

/// Removes temp dirs left by test binaries that were killed before they could clean up (a shared
/// control plane's etcd data would otherwise stay in /dev/shm, that is in memory).
fn remove_stale_dirs() {
    for parent in [env::temp_dir(), PathBuf::from("/dev/shm")] {
        let Ok(entries) = fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(DIR_PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if !process::is_alive(pid) && !entry.path().join(KEPT_MARKER).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Runs a future to completion on a runtime of its own, in a thread of its own, so blocking code
/// can use async clients whether or not the caller is already inside a tokio runtime.
fn block_on_isolated<F>(future: F) -> Result<F::Output, Error>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
                    .map_err(|e| Error::Invalid(format!("cannot build a tokio runtime: {e}")))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn write(path: &Path, contents: &str, what: &'static str) -> Result<(), Error> {
    fs::write(path, contents).map_err(io_error(what, path.to_path_buf()))
}

fn io_error(what: &'static str, path: PathBuf) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, path, source }
}

/// The last `lines` lines of a log; reads only its end, since logs can grow large.
fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 256 * 1024;
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        file.read_to_end(&mut bytes)
    });
    if let Err(e) = read {
        return format!("(cannot read {}: {e})", path.display());
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().expect("free ports");
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("x.log");
        fs::write(&log, "1\n2\n3\n4\n").expect("write log");
        assert_eq!(tail(&log, 2), "3\n4");
        assert_eq!(tail(&log, 10), "1\n2\n3\n4");
    }

    #[test]
    fn kubeconfig_parses_as_a_kube_kubeconfig() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:1234", Path::new("/tmp/x/ca.crt"), "t0k");
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
        assert_eq!(parsed.current_context.as_deref(), Some("capstan-testenv"));
        assert_eq!(
            parsed.clusters[0].cluster.as_ref().and_then(|c| c.server.as_deref()),
            Some("https://127.0.0.1:1234")
        );
    }
}
