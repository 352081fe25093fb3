//! The end-to-end scenarios, written once for every cluster provider (`cargo xtask e2e --cluster
//! kind|local|current` and the chart's RBAC test). Each one runs in its own namespace against an
//! installed operator, prints what it checked and how long it took, and fails with what it saw.
use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use capstan_foo::{Foo, FooSpec};
use capstan_memcached::{Memcached, MemcachedSpec};
use capstan_redis_ha::{
    RedisHA,
    testing::{count_existing, write_acknowledged},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Container, Pod, PodSecurityContext, PodSpec, Secret},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// How a scenario reaches a Pod's port: straight to the Pod IP (the local node's Pod network is
/// routed on the host), or through `kubectl port-forward` (kind, remote clusters).
#[derive(Debug, Clone)]
pub enum PodAccess {
    Direct,
    PortForward {
        kubectl: std::path::PathBuf,
        kubeconfig: Option<std::path::PathBuf>,
    },
}

/// What every scenario gets.
#[derive(Clone)]
pub struct ScenarioEnv {
    pub client: Client,
    pub namespace: String,
    pub access: PodAccess,
    /// Busybox-like image with `sleep` for plain Pods.
    pub sleep_image: String,
}

/// A scenario's name and what it checks, for `--dry-run` and the report.
pub struct Scenario {
    pub name: &'static str,
    pub checks: &'static str,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "foo",
        checks: "a Foo turns happy (Ready) when its friend Pod appears and unhappy when it is deleted",
    },
    Scenario {
        name: "memcached",
        checks: "a Memcached of size 2 gets a Deployment whose memcached Pods answer `version`; \
                 scaling to 3 follows; a Deployment edited by hand is put back; deleting the \
                 Memcached removes its Deployment",
    },
    Scenario {
        name: "redis-ha",
        checks: "a RedisHA of 3 Redis and 3 Sentinels with a password reaches Ready; writes a \
                 replica acknowledged survive deleting the master Pod, after which another Pod is \
                 master; deleting the RedisHA removes its StatefulSets",
    },
];

/// Runs one scenario by name and returns how long it took.
pub async fn run(name: &str, env: &ScenarioEnv) -> anyhow::Result<Duration> {
    let started = Instant::now();
    match name {
        "foo" => foo_follows_its_friend_pod(env).await?,
        "memcached" => memcached_size_scale_drift_delete(env).await?,
        "redis-ha" => redis_ha_fails_over_keeping_writes(env).await?,
        other => bail!("no scenario named {other:?}"),
    }
    Ok(started.elapsed())
}

/// Polls `check` every 250 ms until it yields a value; fails after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => {
                println!("    ok   {what} ({:.1}s)", started.elapsed().as_secs_f64());
                return Ok(value);
            }
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() > timeout {
            match last_error {
                Some(error) => bail!("timed out after {timeout:?} waiting until {what}; last error: {error:#}"),
                None => bail!("timed out after {timeout:?} waiting until {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

async fn foo_follows_its_friend_pod(env: &ScenarioEnv) -> anyhow::Result<()> {
    let foos: Api<Foo> = Api::namespaced(env.client.clone(), &env.namespace);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    let foo = Foo::new(
        "e2e-foo",
        FooSpec {
            name: "e2e-friend".into(),
        },
    );
    foos.create(&PostParams::default(), &foo)
        .await
        .context("creating a Foo")?;
    let status_of = |foos: Api<Foo>| async move {
        Ok::<_, kube::Error>(
            foos.get("e2e-foo")
                .await?
                .status
                .map(|s| (s.happy, is_ready(&s.conditions))),
        )
    };
    wait_for("the Foo reports unhappy while its friend is absent", WAIT, || {
        let foos = foos.clone();
        async move { Ok(status_of(foos).await?.filter(|(happy, ready)| !happy && !ready)) }
    })
    .await?;
    pods.create(&PostParams::default(), &sleeping_pod("e2e-friend", &env.sleep_image))
        .await
        .context("creating the friend Pod")?;
    wait_for("the Foo turns happy and Ready once its friend exists", WAIT, || {
        let foos = foos.clone();
        async move { Ok(status_of(foos).await?.filter(|(happy, ready)| *happy && *ready)) }
    })
    .await?;
    pods.delete("e2e-friend", &DeleteParams::default().grace_period(0))
        .await
        .context("deleting the friend Pod")?;
    wait_for("the Foo turns unhappy once its friend is gone", WAIT, || {
        let foos = foos.clone();
        async move { Ok(status_of(foos).await?.filter(|(happy, _)| !happy)) }
    })
    .await?;
    Ok(())
}

async fn memcached_size_scale_drift_delete(env: &ScenarioEnv) -> anyhow::Result<()> {
    let memcacheds: Api<Memcached> = Api::namespaced(env.client.clone(), &env.namespace);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.namespace);
    let name = "e2e-cache";
    let spec: MemcachedSpec = serde_json::from_value(json!({"size": 2})).context("a Memcached spec")?;
    memcacheds
        .create(&PostParams::default(), &Memcached::new(name, spec))
        .await
        .context("creating a Memcached")?;
    let ready_with = |size: i32| {
        let memcacheds = memcacheds.clone();
        move || {
            let memcacheds = memcacheds.clone();
            async move {
                let status = memcacheds.get(name).await?.status.unwrap_or_default();
                Ok((status.ready_replicas == size
                    && status.nodes.len() == size as usize
                    && is_ready(&status.conditions))
                .then_some(status.nodes))
            }
        }
    };
    let nodes = wait_for("the Memcached is Ready with 2 Pods", WAIT_PODS, ready_with(2)).await?;
    for pod in &nodes {
        let answer = memcached_version(env, pod).await?;
        println!("    ok   memcached Pod {pod} answers `version`: {answer}");
    }

    memcacheds
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await
        .context("scaling the Memcached")?;
    wait_for(
        "scaling to 3: the Memcached is Ready with 3 Pods",
        WAIT_PODS,
        ready_with(3),
    )
    .await?;

    deployments
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .context("editing the Deployment by hand")?;
    wait_for(
        "a hand edit of the Deployment (replicas 5) is put back to 3",
        WAIT,
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get(name).await?;
                let replicas = deployment.spec.replicas;
                let edited = deployment.metadata.generation.unwrap_or_default() > 2;
                Ok((edited && replicas == Some(3)).then_some(()))
            }
        },
    )
    .await?;

    memcacheds
        .delete(name, &DeleteParams::foreground())
        .await
        .context("deleting the Memcached")?;
    // The garbage collector learns a kind whose CRD appeared after it started only at its
    // discovery resync (30 s), hence the long bound.
    wait_for("deleting the Memcached removes its Deployment", WAIT_GC, || {
        let deployments = deployments.clone();
        async move { Ok(deployments.get_opt(name).await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

/// memcached's answer to `version` from one Pod.
async fn memcached_version(env: &ScenarioEnv, pod_name: &str) -> anyhow::Result<String> {
    let reached = reach_pod(env, pod_name, 11211).await?;
    ask_version(&reached.address).await
}

/// A Pod's port, reached as [`PodAccess`] says; a port-forward lives as long as this.
struct ReachedPod {
    address: String,
    _forward: Option<tokio::process::Child>,
}

async fn reach_pod(env: &ScenarioEnv, pod_name: &str, port: u16) -> anyhow::Result<ReachedPod> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.namespace);
    match &env.access {
        PodAccess::Direct => {
            let pod = pods.get(pod_name).await?;
            let ip = pod
                .status
                .and_then(|s| s.pod_ip)
                .with_context(|| format!("Pod {pod_name} has no IP"))?;
            Ok(ReachedPod {
                address: format!("{ip}:{port}"),
                _forward: None,
            })
        }
        PodAccess::PortForward { kubectl, kubeconfig } => {
            let mut command = tokio::process::Command::new(kubectl);
            if let Some(kubeconfig) = kubeconfig {
                command.env("KUBECONFIG", kubeconfig);
            }
            let mut forward = command
                .args([
                    "port-forward",
                    "-n",
                    &env.namespace,
                    &format!("pod/{pod_name}"),
                    &format!(":{port}"),
                ])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting kubectl port-forward")?;
            use tokio::io::AsyncBufReadExt;
            let stdout = forward.stdout.take().context("port-forward's stdout")?;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            // "Forwarding from 127.0.0.1:PORT -> <port>"
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .context("kubectl port-forward printed nothing in 20 s")??
                .context("kubectl port-forward exited")?;
            let address = line
                .split_whitespace()
                .nth(2)
                .with_context(|| format!("unexpected port-forward output {line:?}"))?
                .to_owned();
            Ok(ReachedPod {
                address,
                _forward: Some(forward),
            })
        }
    }
}

/// The RedisHA sample's shape (3 Redis, 3 Sentinels, a password): Ready with a master; writes a
/// replica acknowledged survive the deletion of the master Pod, after which another Pod is master
/// and the RedisHA Ready again; deleting the RedisHA removes its StatefulSets.
async fn redis_ha_fails_over_keeping_writes(env: &ScenarioEnv) -> anyhow::Result<()> {
    let name = "e2e-redis";
    let password = "e2e-redis-password";
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "e2e-redis-auth"},
        "stringData": {"password": password}
    }))?;
    Api::<Secret>::namespaced(env.client.clone(), &env.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .context("creating the auth Secret")?;
    let redis_has: Api<RedisHA> = Api::namespaced(env.client.clone(), &env.namespace);
    let rha: RedisHA = serde_json::from_value(json!({
        "apiVersion": "cache.capstan.dev/v1alpha1", "kind": "RedisHA", "metadata": {"name": name},
        "spec": {"replicas": 3, "sentinel": {"replicas": 3}, "auth": {"secretName": "e2e-redis-auth"}}
    }))?;
    redis_has
        .create(&PostParams::default(), &rha)
        .await
        .context("creating a RedisHA")?;
    let ready_master = |not: Option<String>| {
        let redis_has = redis_has.clone();
        move || {
            let redis_has = redis_has.clone();
            let not = not.clone();
            async move {
                let status = redis_has.get(name).await?.status.unwrap_or_default();
                Ok(status
                    .master
                    .filter(|m| is_ready(&status.conditions) && Some(m) != not.as_ref()))
            }
        }
    };
    let master = wait_for("the RedisHA is Ready with a master", WAIT_PODS, ready_master(None)).await?;
    let acknowledged = {
        let reached = reach_pod(env, &master, 6379).await?;
        let address = reached.address.parse().context("the master's address")?;
        write_acknowledged(address, Some(password), "e2e", 50)
            .await
            .map_err(|e| anyhow::anyhow!("writing to the master {master}: {e}"))?
    };
    println!(
        "    ok   {} writes acknowledged by a replica (WAIT 1)",
        acknowledged.len()
    );

    Api::<Pod>::namespaced(env.client.clone(), &env.namespace)
        .delete(&master, &DeleteParams::default())
        .await
        .context("deleting the master Pod")?;
    let new_master = wait_for(
        "after the master Pod is deleted, another Pod is master and the RedisHA Ready",
        WAIT_PODS,
        ready_master(Some(master.clone())),
    )
    .await?;
    let reached = reach_pod(env, &new_master, 6379).await?;
    let address = reached.address.parse().context("the new master's address")?;
    let found = count_existing(address, Some(password), &acknowledged)
        .await
        .map_err(|e| anyhow::anyhow!("reading from the new master {new_master}: {e}"))?;
    if found != acknowledged.len() {
        bail!(
            "the new master {new_master} holds {found} of {} acknowledged writes",
            acknowledged.len()
        );
    }
    println!("    ok   the new master {new_master} holds every acknowledged write");

    redis_has
        .delete(name, &DeleteParams::foreground())
        .await
        .context("deleting the RedisHA")?;
    let sets: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.namespace);
    wait_for("deleting the RedisHA removes its StatefulSets", WAIT_GC, || {
        let sets = sets.clone();
        async move { Ok(sets.get_opt(name).await?.is_none().then_some(())) }
    })
    .await?;
    Ok(())
}

async fn ask_version(address: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream.write_all(b"version\r\n").await?;
        let mut buffer = vec![0u8; 128];
        let n = stream.read(&mut buffer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buffer[..n]).trim().to_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("memcached at {address} did not answer in 10 s"))?
        .with_context(|| format!("talking to memcached at {address}"))?;
    if !answer.starts_with("VERSION ") {
        bail!("memcached at {address} answered {answer:?}");
    }
    Ok(answer)
}

/// A Pod that sleeps, restricted like the samples' Pods.
pub fn sleeping_pod(name: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65534),
                ..Default::default()
            }),
            termination_grace_period_seconds: Some(0),
            containers: vec![Container {
                name: "sleep".into(),
                image: Some(image.into()),
                command: Some(vec!["sleep".into(), "3600".into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

const WAIT: Duration = Duration::from_secs(60);
/// Pods need a scheduler and a node (image pulls on kind).
const WAIT_PODS: Duration = Duration::from_secs(180);
const WAIT_GC: Duration = Duration::from_secs(120);
