//! A Pod's runtime state as the kubelet reports it: container states, conditions and phase, and
//! the loop that writes it to the Pod's `status`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::lock;

/// How long the status writer lets changes gather before it writes them as one.
pub const STATUS_DEBOUNCE: Duration = Duration::from_millis(100);

/// The state a Pod worker and its container tasks share.
pub type Shared = std::sync::Arc<std::sync::Mutex<PodState>>;

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: TerminatedReason,
    pub message: Option<String>,
    pub started_at: String,
    pub finished_at: String,
}

/// Why a container is waiting, as the kubelet words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingReason {
    PodInitializing,
    ContainerCreating,
    CreateContainerConfigError,
    CreateContainerError,
    CrashLoopBackOff,
}

impl WaitingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingReason::PodInitializing => "PodInitializing",
            WaitingReason::ContainerCreating => "ContainerCreating",
            WaitingReason::CreateContainerConfigError => "CreateContainerConfigError",
            WaitingReason::CreateContainerError => "CreateContainerError",
            WaitingReason::CrashLoopBackOff => "CrashLoopBackOff",
        }
    }
}

impl std::fmt::Display for WaitingReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a container ended, as the kubelet words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminatedReason {
    Completed,
    Error,
}

impl TerminatedReason {
    pub fn of_exit_code(code: i32) -> TerminatedReason {
        if code == 0 {
            TerminatedReason::Completed
        } else {
            TerminatedReason::Error
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TerminatedReason::Completed => "Completed",
            TerminatedReason::Error => "Error",
        }
    }
}

/// A Pod's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: WaitingReason,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
    pub instance: u32,
}

impl ContainerStatus {
    fn new(name: &str, image: &str, reason: WaitingReason) -> ContainerStatus {
        ContainerStatus {
            name: name.to_owned(),
            image: image.to_owned(),
            state: State::Waiting { reason, message: None },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            instance: 0,
        }
    }

    fn to_json(&self, uid: &str) -> Value {
        let state = state_json(&self.state);
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": format!("capstan-localnode://{}", self.image),
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last.as_ref().map_or(json!({}), |t| json!({ "terminated": terminated_json(t) })),
        });
        if self.instance > 0 {
            status["containerID"] = json!(format!("capstan://{uid}/{}/{}", self.name, self.instance));
        }
        status
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason.as_str(),
        "startedAt": t.started_at,
        "finishedAt": t.finished_at,
    });
    if let Some(signal) = t.signal {
        v["signal"] = json!(signal);
    }
    if let Some(message) = &t.message {
        v["message"] = json!(message);
    }
    v
}

fn state_json(state: &State) -> Value {
    match state {
        State::Waiting { reason, message } => {
            let mut w = json!({ "reason": reason.as_str() });
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({ "waiting": w })
        }
        State::Running { started_at } => json!({ "running": { "startedAt": started_at } }),
        State::Terminated(t) => json!({ "terminated": terminated_json(t) }),
    }
}

pub struct PodState {
    pub uid: String,
    pub init: Vec<ContainerStatus>,
    pub main: Vec<ContainerStatus>,
    pub initialized: bool,
    /// Set once the Pod has ended for good (Succeeded or Failed).
    pub terminal_phase: Option<Phase>,
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: String,
    pub message: Option<String>,
    transitions: HashMap<&'static str, (bool, String)>,
}

impl PodState {
    pub fn new(pod: &Pod, host_ip: &str) -> PodState {
        let spec = pod.spec.clone().unwrap_or_default();
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let image = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
        PodState {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| ContainerStatus::new(&c.name, &image(c), WaitingReason::PodInitializing))
                .collect(),
            main: spec
                .containers
                .iter()
                .map(|c| {
                    ContainerStatus::new(
                        &c.name,
                        &image(c),
                        if has_init {
                            WaitingReason::PodInitializing
                        } else {
                            WaitingReason::ContainerCreating
                        },
                    )
                })
                .collect(),
            initialized: !has_init,
            terminal_phase: None,
            pod_ip: None,
            host_ip: host_ip.to_owned(),
            start_time: now(),
            message: None,
            transitions: HashMap::new(),
        }
    }

    pub fn container(&mut self, init: bool, index: usize) -> &mut ContainerStatus {
        if init {
            &mut self.init[index]
        } else {
            &mut self.main[index]
        }
    }

    fn phase(&self) -> Phase {
        if let Some(phase) = self.terminal_phase {
            return phase;
        }
        if !self.initialized {
            return Phase::Pending;
        }
        let started = self.main.iter().all(|c| c.instance > 0);
        if started { Phase::Running } else { Phase::Pending }
    }

    fn condition(&mut self, kind: &'static str, status: bool, reason: Option<&str>) -> Value {
        let now = now();
        let entry = self.transitions.entry(kind).or_insert((status, now.clone()));
        if entry.0 != status {
            *entry = (status, now);
        }
        let mut c = json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let (false, Some(reason)) = (status, reason) {
            c["reason"] = json!(reason);
        }
        c
    }

    /// The Pod's `status`, as a JSON merge patch body. Lists are replaced whole by a merge patch, so
    /// every condition (PodScheduled included) is always sent.
    pub fn status_patch(&mut self) -> Value {
        let phase = self.phase();
        let containers_ready = self.initialized && self.main.iter().all(|c| c.ready) && self.terminal_phase.is_none();
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("Initialized", initialized, Some("ContainersNotInitialized")),
            self.condition("Ready", containers_ready, Some("ContainersNotReady")),
            self.condition("ContainersReady", containers_ready, Some("ContainersNotReady")),
            self.condition("PodScheduled", true, None),
        ];
        let uid = self.uid.clone();
        let mut status = json!({
            "phase": phase.as_str(),
            "conditions": conditions,
            "hostIP": self.host_ip,
            "startTime": self.start_time,
            "containerStatuses": self.main.iter().map(|c| c.to_json(&uid)).collect::<Vec<_>>(),
        });
        if !self.init.is_empty() {
            status["initContainerStatuses"] = json!(self.init.iter().map(|c| c.to_json(&uid)).collect::<Vec<_>>());
        }
        if let Some(ip) = &self.pod_ip {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        if let Some(message) = &self.message {
            status["message"] = json!(message);
        }
        status
    }
}

/// Writes the status whenever it changes, skipping writes that would change nothing.
pub async fn write_status(client: Client, namespace: String, name: String, state: Shared, changed: Arc<Notify>) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
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
