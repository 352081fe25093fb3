//! One Pod's life on the node: sandbox, init containers in order, containers with restart
//! back-off and probes, status written like a kubelet, and graceful termination on deletion.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use tokio::sync::{Notify, watch};

use crate::{
    container::{self, DEFAULT_PATH, ProcessSpec},
    context::Ctx,
    lock, logs,
    network::PodNetwork,
    registry::{ContainerEntry, log_path},
    resolv, sandbox,
    sandbox::{RootDir, RootFile, Sandbox, SandboxSpec},
    security,
    status::{Phase, PodState, Shared, State, Terminated, TerminatedReason, WaitingReason, now},
    supervision::{BACKOFF_RESET, RestartPolicy, backoff_delay, container_checks, terminate},
    volumes,
};

const STATUS_DEBOUNCE: Duration = Duration::from_millis(100);

/// Why the Pod's processes are being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The Pod is being deleted: stop within this grace period, then remove the object.
    Deleted(Duration),
    /// The Pod object is gone already: nothing left to write or delete.
    Gone(Duration),
    /// The agent stops: the processes go, and so does the object, as the Pod garbage collector
    /// would remove it with the Node anyway; its controller then makes a replacement at once.
    Shutdown(Duration),
}

struct Worker {
    ctx: Arc<Ctx>,
    pod: Pod,
    namespace: String,
    name: String,
    uid: String,
    state: Arc<Mutex<PodState>>,
    changed: Arc<Notify>,
    stop: watch::Receiver<Option<Duration>>,
}

/// Runs a Pod until it is deleted (then removes the object) or the agent stops.
pub async fn run(ctx: Arc<Ctx>, pod: Pod, mut updates: watch::Receiver<Option<Pod>>) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let host_ip = ctx.settings.pod_cidr.gateway().to_string();
    let state = Arc::new(Mutex::new(PodState::new(&pod, &host_ip)));
    let changed = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(None);
    let writer = tokio::spawn(write_status(
        ctx.clone(),
        namespace.clone(),
        name.clone(),
        state.clone(),
        changed.clone(),
    ));
    changed.notify_one();

    let worker = Worker {
        ctx: ctx.clone(),
        pod: pod.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        state: state.clone(),
        changed: changed.clone(),
        stop: stop_rx,
    };
    let mut shutdown = ctx.shutdown.clone();
    let stop_cap = ctx.settings.stop_grace_cap;
    let wait_stop = async {
        loop {
            let current = updates.borrow_and_update().clone();
            match current {
                None => return Stop::Gone(Duration::ZERO),
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    let grace = pod
                        .metadata
                        .deletion_grace_period_seconds
                        .or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
                        .unwrap_or(30);
                    return Stop::Deleted(Duration::from_secs(grace.max(0) as u64));
                }
                Some(_) => {}
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return Stop::Gone(Duration::ZERO) },
                _ = shutdown.wait_for(|s| *s) => return Stop::Shutdown(stop_cap),
            }
        }
    };
    tokio::pin!(wait_stop);

    // The sandbox: retried (with deletion still honoured) while it cannot be made.
    let mut attempt = 0u32;
    let sandbox = loop {
        let result = tokio::select! {
            result = worker.start_sandbox() => result,
            stop = &mut wait_stop => {
                finish(&ctx, &namespace, &name, &uid, stop, None, writer, &changed).await;
                return;
            }
        };
        match result {
            Ok(sandbox) => break sandbox,
            Err(message) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %message, "cannot create the Pod sandbox");
                {
                    let mut s = lock(&state);
                    s.message = Some(message.clone());
                    let PodState { init, main, .. } = &mut *s;
                    for c in init.iter_mut().chain(main.iter_mut()) {
                        c.state = State::Waiting {
                            reason: WaitingReason::CreateContainerConfigError,
                            message: Some(message.clone()),
                        };
                    }
                }
                changed.notify_one();
                attempt += 1;
                let delay = backoff_delay(ctx.settings.backoff_initial, attempt);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    stop = &mut wait_stop => {
                        finish(&ctx, &namespace, &name, &uid, stop, None, writer, &changed).await;
                        return;
                    }
                }
            }
        }
    };
    {
        let mut s = lock(&state);
        s.pod_ip = Some(sandbox.network.ip.to_string());
        s.message = None;
    }
    changed.notify_one();

    let stop = {
        let run = worker.run_containers(&sandbox);
        tokio::pin!(run);
        tokio::select! {
            () = &mut run => {
                // Every container has ended for good: the Pod is terminal. Its processes are gone;
                // the sandbox stays until the Pod is deleted, as a kubelet keeps a terminal Pod.
                changed.notify_one();
                (&mut wait_stop).await
            }
            stop = &mut wait_stop => {
                let grace = match stop { Stop::Deleted(g) | Stop::Gone(g) | Stop::Shutdown(g) => g };
                let _ = stop_tx.send(Some(grace));
                run.await;
                stop
            }
        }
    };
    finish(&ctx, &namespace, &name, &uid, stop, Some(sandbox), writer, &changed).await;
}

#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
    uid: &str,
    stop: Stop,
    sandbox: Option<Sandbox>,
    writer: tokio::task::JoinHandle<()>,
    changed: &Notify,
) {
    if matches!(stop, Stop::Deleted(_)) {
        // Let the last container states reach the API before the object goes.
        changed.notify_one();
        tokio::time::sleep(STATUS_DEBOUNCE * 3).await;
    }
    writer.abort();
    if let Some(sandbox) = sandbox {
        let ip = sandbox.network.ip;
        sandbox.stop().await;
        ctx.allocator.release(ip);
    }
    ctx.registry.remove(namespace, name, uid);
    if matches!(stop, Stop::Deleted(_) | Stop::Shutdown(_)) {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), "Pod removed"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "cannot remove the Pod object"),
        }
    }
}

/// Writes the status whenever it changes, skipping writes that would change nothing.
async fn write_status(ctx: Arc<Ctx>, namespace: String, name: String, state: Shared, changed: Arc<Notify>) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut last = serde_json::Value::Null;
    let mut retry = Duration::from_millis(500);
    loop {
        changed.notified().await;
        tokio::time::sleep(STATUS_DEBOUNCE).await;
        let status = lock(&state).status_patch();
        if status == last {
            continue;
        }
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                last = status;
                retry = Duration::from_millis(500);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(e) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, ?retry, "status write failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
                changed.notify_one();
            }
        }
    }
}

impl Worker {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn hostname(&self) -> String {
        let name = self.spec().hostname.unwrap_or_else(|| self.name.clone());
        name.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_owned()
    }

    fn all_containers(&self) -> Vec<Container> {
        let spec = self.spec();
        spec.init_containers
            .into_iter()
            .flatten()
            .chain(spec.containers)
            .collect()
    }

    async fn start_sandbox(&self) -> Result<Sandbox, String> {
        let settings = &self.ctx.settings;
        let ip = self.ctx.allocator.allocate().map_err(|e| e.to_string())?;
        let id = short_id(&self.uid);
        let network = PodNetwork::new(&id, ip, settings.marker());
        let dir = settings.state_dir.join("pods").join(&self.uid);
        match self.build_sandbox(network.clone(), dir.clone(), ip).await {
            Ok(sandbox) => Ok(sandbox),
            Err(e) => {
                network.delete().await;
                let _ = std::fs::remove_dir_all(&dir);
                self.ctx.allocator.release(ip);
                Err(e)
            }
        }
    }

    async fn build_sandbox(
        &self,
        network: PodNetwork,
        dir: std::path::PathBuf,
        ip: Ipv4Addr,
    ) -> Result<Sandbox, String> {
        let settings = &self.ctx.settings;
        let host_ip = settings.pod_cidr.gateway().to_string();
        let pod_ip = ip.to_string();
        let volume_dirs = volumes::prepare(&volumes::VolumeContext {
            client: &self.ctx.client,
            pod: &self.pod,
            dir: &dir.join("volumes"),
            claims_dir: &settings.state_dir.join("claims"),
            pod_ip: &pod_ip,
            host_ip: &host_ip,
            allow_host_path: settings.allow_privileged,
        })
        .await?;
        // The subPath files stay open until the sandbox has mounted them.
        let (mounts, held_files) = volumes::mounts(&self.pod, &volume_dirs)?;

        let hostname = self.hostname();
        let domain = &settings.cluster_domain;
        let ns = &self.namespace;
        let fqdn = match self.spec().subdomain.filter(|s| !s.is_empty()) {
            Some(sub) => format!("{hostname}.{sub}.{ns}.svc.{domain} "),
            None => String::new(),
        };
        let spec = self.spec();
        let resolv = resolv::resolv_conf(
            spec.dns_policy.as_deref(),
            spec.dns_config.as_ref(),
            &resolv::DnsContext {
                namespace: ns,
                cluster_domain: domain,
                cluster_dns: &host_ip,
                host_resolv_conf: &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            },
        )?;
        let mut files = vec![
            RootFile {
                path: "/etc/resolv.conf".into(),
                contents: resolv.into_bytes(),
                mode: 0o644,
            },
            RootFile {
                path: "/etc/hosts".into(),
                contents: format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n{pod_ip}\t{fqdn}{hostname}\n").into_bytes(),
                mode: 0o644,
            },
            RootFile {
                path: "/etc/hostname".into(),
                contents: format!("{hostname}\n").into_bytes(),
                mode: 0o644,
            },
        ];
        let mut dirs = Vec::new();
        for c in self.all_containers() {
            let image = container::classify(c.image.as_deref().unwrap_or_default(), &settings.images);
            let (image_files, image_dirs) = container::root_additions(&image, &c)?;
            files.extend(image_files);
            dirs.extend(image_dirs);
            if let Some(wd) = &c.working_dir {
                security::check_pod_path("workingDir", wd).map_err(|e| format!("container {}: {e}", c.name))?;
                dirs.push(RootDir {
                    path: wd.clone(),
                    uid: 0,
                    gid: 0,
                });
            }
        }
        network
            .create(&settings.pod_cidr, &settings.service_cidr)
            .await
            .map_err(|e| e.to_string())?;
        let spec = SandboxSpec {
            dir,
            hostname,
            mounts,
            files,
            dirs,
        };
        let sandbox = Sandbox::start(spec, network.clone()).await.map_err(|e| e.to_string())?;
        drop(held_files);
        self.ctx
            .registry
            .update(&self.namespace, &self.name, &self.uid, |entry| {
                entry.network = Some(network);
                entry.holder_pid = Some(sandbox.holder_pid);
            });
        tracing::info!(pod = %self.key(), ip = %ip, "sandbox ready");
        Ok(sandbox)
    }

    /// Init containers in order, then all containers side by side. Returns when the Pod is terminal
    /// or stopped.
    async fn run_containers(&self, sandbox: &Sandbox) {
        let spec = self.spec();
        let policy = RestartPolicy::of(spec.restart_policy.as_deref());
        for (index, c) in spec.init_containers.iter().flatten().enumerate() {
            match self.supervise(sandbox, c, true, index, policy.for_init()).await {
                Outcome::Succeeded => {}
                Outcome::Failed => {
                    lock(&self.state).terminal_phase = Some(Phase::Failed);
                    return;
                }
                Outcome::Stopped => return,
            }
        }
        if !spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
            let mut s = lock(&self.state);
            s.initialized = true;
            for c in &mut s.main {
                c.state = State::Waiting {
                    reason: WaitingReason::ContainerCreating,
                    message: None,
                };
            }
        }
        self.changed.notify_one();
        let outcomes = join_all(
            spec.containers
                .iter()
                .enumerate()
                .map(|(index, c)| self.supervise(sandbox, c, false, index, policy)),
        )
        .await;
        if outcomes.contains(&Outcome::Stopped) {
            return;
        }
        lock(&self.state).terminal_phase = Some(if outcomes.iter().all(|o| *o == Outcome::Succeeded) {
            Phase::Succeeded
        } else {
            Phase::Failed
        });
    }

    /// Runs one container, restarting it per `policy` with back-off, until it ends for good or
    /// the Pod stops.
    async fn supervise(
        &self,
        sandbox: &Sandbox,
        c: &Container,
        init: bool,
        index: usize,
        policy: RestartPolicy,
    ) -> Outcome {
        let mut stop = self.stop.clone();
        let mut failures = 0u32;
        loop {
            if stop.borrow().is_some() {
                return Outcome::Stopped;
            }
            let started = Instant::now();
            let result = match self.prepare(sandbox, c).await {
                Ok((process, argv)) => self.run_once(sandbox, c, init, index, &process, &argv, &mut stop).await,
                Err((reason, message)) => {
                    tracing::warn!(pod = %self.key(), container = %c.name, %reason, %message, "container cannot start");
                    lock(&self.state).container(init, index).state = State::Waiting {
                        reason,
                        message: Some(message),
                    };
                    self.changed.notify_one();
                    Run::NotStarted
                }
            };
            let exit_code = match result {
                Run::Stopped => return Outcome::Stopped,
                Run::Exited(code) => Some(code),
                Run::NotStarted => None,
            };
            let restart = policy.restarts(exit_code);
            if !restart {
                return if exit_code == Some(0) {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                };
            }
            if started.elapsed() > BACKOFF_RESET {
                failures = 0;
            }
            failures += 1;
            let delay = backoff_delay(self.ctx.settings.backoff_initial, failures);
            if exit_code.is_some() {
                let mut s = lock(&self.state);
                let status = s.container(init, index);
                status.restart_count += 1;
                if let State::Terminated(t) = &status.state {
                    status.last = Some(t.clone());
                }
                status.state = State::Waiting {
                    reason: WaitingReason::CrashLoopBackOff,
                    message: Some(format!(
                        "back-off {}s restarting failed container={} pod={}_{}({})",
                        delay.as_secs_f64(),
                        c.name,
                        self.name,
                        self.namespace,
                        self.uid
                    )),
                };
                status.ready = false;
                status.started = false;
            }
            self.changed.notify_one();
            tracing::info!(pod = %self.key(), container = %c.name, delay = ?delay, "restarting after back-off");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(Option::is_some) => return Outcome::Stopped,
            }
        }
    }

    /// The command and process settings of a container, or the Waiting reason and message.
    async fn prepare(
        &self,
        sandbox: &Sandbox,
        c: &Container,
    ) -> Result<(ProcessSpec, Vec<String>), (WaitingReason, String)> {
        let settings = &self.ctx.settings;
        let image_ref = c.image.clone().unwrap_or_default();
        let image = container::classify(&image_ref, &settings.images);
        let spec = self.spec();
        let pod_sc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let pod_ip = sandbox.network.ip.to_string();
        let host_ip = settings.pod_cidr.gateway().to_string();

        let hostname = self.hostname();
        let mut base = vec![
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
            ("HOSTNAME".to_owned(), hostname),
        ];
        let kubernetes_ip = crate::lock(&self.ctx.kubernetes_ip).clone();
        if let Some(ip) = kubernetes_ip {
            base.extend([
                ("KUBERNETES_SERVICE_HOST".to_owned(), ip.clone()),
                ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
                ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), "443".to_owned()),
                ("KUBERNETES_PORT".to_owned(), format!("tcp://{ip}:443")),
                ("KUBERNETES_PORT_443_TCP".to_owned(), format!("tcp://{ip}:443")),
                ("KUBERNETES_PORT_443_TCP_PROTO".to_owned(), "tcp".to_owned()),
                ("KUBERNETES_PORT_443_TCP_PORT".to_owned(), "443".to_owned()),
                ("KUBERNETES_PORT_443_TCP_ADDR".to_owned(), ip),
            ]);
        }
        let env = container::environment(&self.ctx.client, &self.pod, c, base, &pod_ip, &host_ip)
            .await
            .map_err(|m| (WaitingReason::CreateContainerConfigError, m))?;
        let command: Vec<String> = c.command.iter().flatten().map(|s| container::expand(s, &env)).collect();
        let args: Vec<String> = c.args.iter().flatten().map(|s| container::expand(s, &env)).collect();
        let resolved = container::resolve(&image, &image_ref, &command, &args)
            .map_err(|m| (WaitingReason::CreateContainerError, m))?;

        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let uid = to_u32(sc.run_as_user.or(pod_sc.run_as_user))
            .or(resolved.default_user.map(|u| u.0))
            .unwrap_or(0);
        let gid = to_u32(sc.run_as_group.or(pod_sc.run_as_group))
            .or(resolved.default_user.map(|u| u.1))
            .unwrap_or(0);
        if sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true) && uid == 0 {
            return Err((
                WaitingReason::CreateContainerConfigError,
                "container has runAsNonRoot and image will run as root".to_owned(),
            ));
        }
        let apparmor_annotation = self
            .pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&format!("{}{}", security::APPARMOR_ANNOTATION_PREFIX, c.name)));
        let confinement = security::confinement(
            spec.security_context.as_ref(),
            c.security_context.as_ref(),
            apparmor_annotation.map(String::as_str),
            settings.allow_privileged,
        )
        .map_err(|r| (WaitingReason::CreateContainerConfigError, r.to_string()))?;
        let private_tmp = !self
            .all_containers()
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.mount_path.trim_end_matches('/') == "/tmp");
        let mut groups: Vec<u32> = pod_sc
            .fs_group
            .into_iter()
            .chain(pod_sc.supplemental_groups.into_iter().flatten())
            .filter_map(|g| u32::try_from(g).ok())
            .collect();
        groups.dedup();
        let mut env = env;
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push((
                "HOME".to_owned(),
                if uid == 0 { "/root".to_owned() } else { "/".to_owned() },
            ));
        }
        let workdir = c
            .working_dir
            .clone()
            .or(resolved.default_workdir)
            .unwrap_or_else(|| "/".to_owned());
        Ok((
            ProcessSpec {
                holder_pid: sandbox.holder_pid,
                uid,
                gid,
                groups,
                workdir,
                env,
                confinement,
                private_tmp,
                beside: None,
            },
            resolved.argv,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_once(
        &self,
        sandbox: &Sandbox,
        c: &Container,
        init: bool,
        index: usize,
        process: &ProcessSpec,
        argv: &[String],
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> Run {
        let log = log_path(&self.ctx.settings.state_dir, &self.namespace, &self.name, &c.name);
        let log_file = match logs::RotatingLog::open(&log, self.ctx.settings.log_max_bytes) {
            Ok(file) => Arc::new(Mutex::new(file)),
            Err(e) => {
                lock(&self.state).container(init, index).state = State::Waiting {
                    reason: WaitingReason::CreateContainerError,
                    message: Some(format!("log file {}: {e}", log.display())),
                };
                self.changed.notify_one();
                return Run::NotStarted;
            }
        };
        let spawned = process
            .command(argv)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                lock(&self.state).container(init, index).state = State::Waiting {
                    reason: WaitingReason::CreateContainerError,
                    message: Some(format!("starting {argv:?}: {e}")),
                };
                self.changed.notify_one();
                return Run::NotStarted;
            }
        };
        if let Some(out) = child.stdout.take() {
            tokio::spawn(logs::copy(out, log_file.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(logs::copy(err, log_file));
        }
        // `nsenter` forks the container into the Pod's PID namespace: its child is the container.
        let nsenter_pid = child.id().unwrap_or_default();
        let pid = sandbox::child_of(nsenter_pid, Duration::from_secs(2))
            .await
            .unwrap_or(nsenter_pid);
        let beside = process.beside(Some(pid));
        let started_at = now();
        tracing::info!(pod = %self.key(), container = %c.name, pid, argv = ?argv, "container started");
        self.ctx
            .registry
            .update(&self.namespace, &self.name, &self.uid, |entry| {
                entry.containers.insert(
                    c.name.clone(),
                    ContainerEntry {
                        pid: Some(pid),
                        process: process.clone(),
                    },
                );
            });
        {
            let mut s = lock(&self.state);
            let status = s.container(init, index);
            status.instance += 1;
            status.state = State::Running {
                started_at: started_at.clone(),
            };
            status.started = false;
            status.ready = false;
        }
        self.changed.notify_one();

        // postStart, the startup probe, then readiness and liveness; a failure of any but
        // readiness asks for the container to be killed.
        let (kill_tx, mut kill_rx) = tokio::sync::mpsc::channel::<String>(1);
        let checks = tokio::spawn(container_checks(
            c.clone(),
            init,
            index,
            sandbox.network.ip,
            beside.clone(),
            self.state.clone(),
            self.changed.clone(),
            kill_tx,
        ));
        let spec = self.spec();
        let grace = Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        let pre_stop = c.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        let mut message = None;
        let mut stopped = false;
        let status = tokio::select! {
            status = child.wait() => Ok(status),
            Some(reason) = kill_rx.recv() => {
                tracing::info!(pod = %self.key(), container = %c.name, %reason, "killing the container");
                message = Some(reason);
                Err(grace)
            }
            requested = stop.wait_for(Option::is_some) => {
                stopped = true;
                let grace = requested.ok().and_then(|r| *r).unwrap_or(grace);
                Err(grace)
            }
        };
        checks.abort();
        let status = match status {
            Err(grace) => {
                let hook = pre_stop.map(|hook| (hook, c, sandbox.network.ip, &beside));
                terminate(&mut child, pid, grace, hook, &self.key()).await
            }
            Ok(status) => status,
        };
        self.ctx
            .registry
            .update(&self.namespace, &self.name, &self.uid, |entry| {
                if let Some(e) = entry.containers.get_mut(&c.name) {
                    e.pid = None;
                }
            });
        use std::os::unix::process::ExitStatusExt;
        let (exit_code, signal) = match &status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => (code, None),
                (None, Some(sig)) => (128 + sig, Some(sig)),
                (None, None) => (-1, None),
            },
            Err(_) => (-1, None),
        };
        let reason = TerminatedReason::of_exit_code(exit_code);
        tracing::info!(pod = %self.key(), container = %c.name, exit_code, "container exited");
        {
            let mut s = lock(&self.state);
            let status = s.container(init, index);
            status.ready = false;
            status.state = State::Terminated(Terminated {
                exit_code,
                signal,
                reason,
                message,
                started_at,
                finished_at: now(),
            });
        }
        self.changed.notify_one();
        if stopped { Run::Stopped } else { Run::Exited(exit_code) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
    Stopped,
}

enum Run {
    Exited(i32),
    NotStarted,
    Stopped,
}

/// Eight hex digits of the Pod's uid: short enough for interface names, unique enough per node.
fn short_id(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).collect();
    let tail = &hex[hex.len().saturating_sub(8)..];
    format!("{tail:0>8}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_fit_interface_names() {
        let id = short_id("0b9f3c2e-1d4a-4f7b-9c1e-2a3b4c5d6e7f");
        assert_eq!(id, "4c5d6e7f");
        assert!(format!("{}{id}", crate::host::VETH_PREFIX).len() <= 15);
    }
}
