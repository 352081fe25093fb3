//! A real local Kubernetes control plane for capstan's tests and `cargo xtask dev`: etcd,
//! kube-apiserver and kube-controller-manager (v1.20.2) as local processes, in the spirit of
//! controller-runtime's envtest. No scheduler and no kubelet, so Pods stay Pending.
//!
//! ```no_run
//! # async fn demo() -> Result<(), capstan_testenv::Error> {
//! use capstan_testenv::ControlPlane;
//! let control_plane = ControlPlane::shared();
//! let client = control_plane.client().await;
//! let namespace = control_plane.namespace(&client, "my-test").await?;
//! # let _ = namespace; Ok(()) }
//! ```
//!
//! Pods stay Pending unless a test opts in to [`ControlPlane::shared_local_node`], which runs them as
//! real processes (`capstan-localnode`; needs root, see [`local_node_available`]).
//!
//! [`spawn_manager`] runs a manager in-process, scoped to a test's namespace.
//!
//! Binaries come from [`assets::locate`]; `cargo xtask envtest` provisions them. Set
//! `CAPSTAN_TESTENV_KEEP=1` to keep a control plane's logs and kubeconfig after it stops.

mod api;
pub mod assets;
pub mod audit;
mod certs;
mod control_plane;
mod controller_test;
mod error;
mod eventually;
mod http;
mod local_node;
pub mod manager_process;
pub mod process;
mod random;
mod running_manager;

pub use control_plane::{ControlPlane, Options};
pub use controller_test::{ControllerTest, namespace_with_crds};
pub use error::Error;
pub use eventually::{Attempt, eventually};
pub use http::http_get;
pub use local_node::local_node_available;
pub use running_manager::{RunningManager, spawn_manager, spawn_manager_with, test_args};
