//! A Pod's volumes as host directories under the Pod's state directory, bind-mounted by the
//! sandbox at their `mountPath`s. Contents are written once, when the Pod starts: ConfigMap and
//! Secret updates are not propagated into running Pods.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume},
};
use kube::{Api, Client, api::PostParams};

use crate::container::{config_map_data, field_value, secret_data};

/// One bind mount into the Pod's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// What `prepare` needs besides the Pod.
pub struct VolumeContext<'a> {
    pub client: &'a Client,
    pub pod: &'a Pod,
    /// Where this Pod's volumes live: `<dir>/<volume name>`.
    pub dir: &'a Path,
    /// Where PersistentVolumeClaims live, one directory per namespace and claim, kept as long as the
    /// agent runs so a claim's data survives the Pods using it.
    pub claims_dir: &'a Path,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

/// Materialises every volume; returns each volume's host directory (or file, for hostPath).
pub async fn prepare(ctx: &VolumeContext<'_>) -> Result<HashMap<String, PathBuf>, String> {
    let namespace = ctx.pod.metadata.namespace.clone().unwrap_or_default();
    let fs_group = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)
        .and_then(|g| u32::try_from(g).ok());
    let mut out = HashMap::new();
    for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = ctx.dir.join(&volume.name);
        let path = prepare_one(ctx, &namespace, volume, &dir).await?;
        if let Some(group) = fs_group
            && path.starts_with(ctx.dir)
        {
            chown_group_recursive(&path, group);
        }
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(ctx: &VolumeContext<'_>, namespace: &str, volume: &Volume, dir: &Path) -> Result<PathBuf, String> {
    let create = |dir: &Path, mode: u32| -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("volume {}: {e}", volume.name))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("volume {}: {e}", volume.name))
    };
    if volume.empty_dir.is_some() {
        // The kubelet makes emptyDirs world-writable, so any runAsUser can use them.
        create(dir, 0o777)?;
    } else if let Some(cm) = &volume.config_map {
        create(dir, 0o755)?;
        let optional = cm.optional.unwrap_or(false);
        if let Some(data) = config_map_data(ctx.client, namespace, &cm.name, optional).await? {
            let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
            write_keys(dir, &data, cm.items.as_deref(), cm.default_mode, optional)?;
        }
    } else if let Some(secret) = &volume.secret {
        create(dir, 0o755)?;
        let name = secret.secret_name.clone().unwrap_or_default();
        let optional = secret.optional.unwrap_or(false);
        if let Some(data) = secret_data(ctx.client, namespace, &name, optional).await? {
            let data = data.into_iter().map(|(k, v)| (k, v.0)).collect();
            write_keys(dir, &data, secret.items.as_deref(), secret.default_mode, optional)?;
        }
    } else if let Some(downward) = &volume.downward_api {
        create(dir, 0o755)?;
        write_downward(
            ctx,
            dir,
            downward.items.as_deref().unwrap_or_default(),
            downward.default_mode,
        )?;
    } else if let Some(projected) = &volume.projected {
        create(dir, 0o755)?;
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                if let Some(data) = config_map_data(ctx.client, namespace, &cm.name, optional).await? {
                    let data = data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                    write_keys(dir, &data, cm.items.as_deref(), projected.default_mode, optional)?;
                }
            }
            if let Some(secret) = &source.secret {
                let optional = secret.optional.unwrap_or(false);
                if let Some(data) = secret_data(ctx.client, namespace, &secret.name, optional).await? {
                    let data = data.into_iter().map(|(k, v)| (k, v.0)).collect();
                    write_keys(dir, &data, secret.items.as_deref(), projected.default_mode, optional)?;
                }
            }
            if let Some(downward) = &source.downward_api {
                write_downward(
                    ctx,
                    dir,
                    downward.items.as_deref().unwrap_or_default(),
                    projected.default_mode,
                )?;
            }
            if let Some(token) = &source.service_account_token {
                let jwt =
                    service_account_token(ctx, namespace, token.audience.clone(), token.expiration_seconds).await?;
                write_file(
                    dir,
                    &token.path,
                    jwt.as_bytes(),
                    projected.default_mode.map_or(0o644, |m| m as u32),
                )?;
            }
        }
    } else if let Some(claim) = &volume.persistent_volume_claim {
        let dir = ctx.claims_dir.join(namespace).join(&claim.claim_name);
        create(&dir, 0o777)?;
        return Ok(dir);
    } else if let Some(host_path) = &volume.host_path {
        return Ok(PathBuf::from(&host_path.path));
    } else {
        return Err(format!(
            "volume {}: this kind of volume is not supported by capstan-localnode (emptyDir, configMap, \
             secret, downwardAPI, projected, persistentVolumeClaim and hostPath are)",
            volume.name
        ));
    }
    Ok(dir.to_path_buf())
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), String> {
    let default_mode = default_mode.map_or(0o644, |m| m as u32);
    match items {
        None => {
            for (key, value) in data {
                write_file(dir, key, value, default_mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(dir, &item.path, value, item.mode.map_or(default_mode, |m| m as u32))?,
                    None if optional => {}
                    None => return Err(format!("key {} not found for item {}", item.key, item.path)),
                }
            }
        }
    }
    Ok(())
}

fn write_downward(
    ctx: &VolumeContext<'_>,
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
) -> Result<(), String> {
    for item in items {
        let value = match &item.field_ref {
            Some(field) => field_value(ctx.pod, &field.field_path, ctx.pod_ip, ctx.host_ip)
                .ok_or_else(|| format!("unsupported downward API field {}", field.field_path))?,
            // Resource fields: no limits are enforced here.
            None => "0".to_owned(),
        };
        let mode = item.mode.or(default_mode).map_or(0o644, |m| m as u32);
        write_file(dir, &item.path, value.as_bytes(), mode)?;
    }
    Ok(())
}

async fn service_account_token(
    ctx: &VolumeContext<'_>,
    namespace: &str,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String, String> {
    let account = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: audience.map(|a| vec![a]),
            expiration_seconds: Some(expiration.unwrap_or(3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: ctx.pod.metadata.name.clone(),
                uid: ctx.pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("a token for ServiceAccount {namespace}/{account}: {e}"))?;
    Ok(answer.status.and_then(|s| s.token).unwrap_or_default())
}

/// Writes `dir/relative` refusing paths that climb out of `dir`.
fn write_file(dir: &Path, relative: &str, contents: &[u8], mode: u32) -> Result<(), String> {
    let relative = Path::new(relative);
    if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "volume path {} must be relative without `..`",
            relative.display()
        ));
    }
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn chown_group_recursive(path: &Path, group: u32) {
    let _ = std::os::unix::fs::lchown(path, None, Some(group));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            chown_group_recursive(&entry.path(), group);
        }
    }
}

/// The bind mounts of all the Pod's containers (all containers share one mount namespace, so a
/// path mounted by one container is visible to all).
pub fn mounts(pod: &Pod, volumes: &HashMap<String, PathBuf>) -> Result<Vec<Mount>, String> {
    let mut mounts: Vec<Mount> = Vec::new();
    let spec = pod.spec.as_ref();
    let containers = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(s.containers.iter()));
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            let source = volumes
                .get(&mount.name)
                .ok_or_else(|| format!("container {} mounts unknown volume {}", container.name, mount.name))?;
            let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let path = source.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path).map_err(|e| format!("subPath {sub}: {e}"))?;
                    }
                    path
                }
                None => source.clone(),
            };
            let m = Mount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only.unwrap_or(false),
            };
            if !mounts.iter().any(|existing| existing.target == m.target) {
                mounts.push(m);
            }
        }
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pick_keys_paths_and_modes() -> Result<(), String> {
        let dir = std::env::temp_dir().join(format!("capstan-localnode-volumes-{}", std::process::id()));
        let data = BTreeMap::from([("a".to_owned(), b"1".to_vec()), ("b".to_owned(), b"2".to_vec())]);
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: Some(0o600),
            ..KeyToPath::default()
        }];
        write_keys(&dir, &data, Some(&items), Some(0o644), false)?;
        let mode = std::fs::metadata(dir.join("sub/x"))
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join("b").exists());
        assert!(write_file(&dir, "../escape", b"", 0o644).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
