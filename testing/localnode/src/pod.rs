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
    api::{DeleteParams, Preconditions},
};
use tokio::sync::{Notify, watch};

use crate::{
    container::{self, ContainerContext},
    context::Ctx,
    lock,
    network::PodNetwork,
    resolv,
    sandbox::{RootDir, RootFile, Sandbox, SandboxSpec},
    security,
    status::{Phase, PodState, STATUS_DEBOUNCE, State, WaitingReason, write_status},
    supervision::{self, BACKOFF_RESET, ContainerStart, RestartPolicy, Run, RunContext, backoff_delay},
    volumes,
};

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
        ctx.client.clone(),
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
                worker.finish(stop, None, writer).await;
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
                        worker.finish(stop, None, writer).await;
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
    worker.finish(stop, Some(sandbox), writer).await;
}

impl Worker {
    /// Stops the status writer and the sandbox, forgets the Pod and, when it is being deleted or
    /// the agent stops, removes the object.
    async fn finish(&self, stop: Stop, sandbox: Option<Sandbox>, writer: tokio::task::JoinHandle<()>) {
        let (ctx, namespace, name, uid) = (&self.ctx, &self.namespace, &self.name, &self.uid);
        if matches!(stop, Stop::Deleted(_)) {
            // Let the last container states reach the API before the object goes.
            self.changed.notify_one();
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
                Err(e) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "cannot remove the Pod object")
                }
            }
        }
    }

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

    fn container_context<'a>(&'a self, sandbox: &'a Sandbox) -> ContainerContext<'a> {
        let settings = &self.ctx.settings;
        ContainerContext {
            client: &self.ctx.client,
            pod: &self.pod,
            sandbox,
            images: &settings.images,
            allow_privileged: settings.allow_privileged,
            hostname: self.hostname(),
            host_ip: settings.pod_cidr.gateway().to_string(),
            kubernetes_ip: lock(&self.ctx.kubernetes_ip).clone(),
        }
    }

    fn run_context<'a>(&'a self, sandbox: &Sandbox) -> RunContext<'a> {
        let grace = self.spec().termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
        RunContext {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
            state_dir: &self.ctx.settings.state_dir,
            log_max_bytes: self.ctx.settings.log_max_bytes,
            registry: &self.ctx.registry,
            state: &self.state,
            changed: &self.changed,
            pod_ip: sandbox.network.ip,
            grace: Duration::from_secs(grace),
        }
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
            let result = match container::prepare(&self.container_context(sandbox), c).await {
                Ok((process, argv)) => {
                    let start = ContainerStart {
                        container: c,
                        init,
                        index,
                        process: &process,
                        argv: &argv,
                    };
                    supervision::run_once(&self.run_context(sandbox), start, &mut stop).await
                }
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
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
