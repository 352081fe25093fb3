//! What the agent knows about the Pods it runs, shared with the [`crate::LocalNode`] handle for
//! fault injection and inspection.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, MutexGuard},
};

use crate::{container::ProcessSpec, network::PodNetwork};

#[derive(Default)]
pub struct Registry {
    pods: Mutex<HashMap<(String, String), PodEntry>>,
}

#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    pub uid: String,
    pub network: Option<PodNetwork>,
    pub holder_pid: Option<u32>,
    pub containers: HashMap<String, ContainerEntry>,
}

#[derive(Debug, Clone)]
pub struct ContainerEntry {
    pub pid: Option<u32>,
    pub process: ProcessSpec,
}

impl Registry {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), PodEntry>> {
        crate::lock(&self.pods)
    }

    pub fn get(&self, namespace: &str, pod: &str) -> Option<PodEntry> {
        self.lock().get(&(namespace.to_owned(), pod.to_owned())).cloned()
    }

    /// Changes the entry of `namespace/pod` if it still belongs to the Pod with `uid` (a Pod of the
    /// same name may already have replaced it).
    pub fn update(&self, namespace: &str, pod: &str, uid: &str, f: impl FnOnce(&mut PodEntry)) {
        let mut pods = self.lock();
        let entry = pods
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_insert_with(|| PodEntry {
                uid: uid.to_owned(),
                ..PodEntry::default()
            });
        if entry.uid == uid {
            f(entry);
        }
    }

    pub fn remove(&self, namespace: &str, pod: &str, uid: &str) {
        let mut pods = self.lock();
        let key = (namespace.to_owned(), pod.to_owned());
        if pods.get(&key).is_some_and(|e| e.uid == uid) {
            pods.remove(&key);
        }
    }
}

/// Where a container's stdout and stderr go: kept until the agent stops, also after the Pod is gone.
pub fn log_path(state_dir: &std::path::Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(namespace)
        .join(pod)
        .join(format!("{container}.log"))
}
