//! The bundled chart, `deploy/charts/capstan`, rendered with `helm template`.
use std::{path::Path, path::PathBuf, process::Command};

use serde::Deserialize;
use serde_json::Value;

use crate::{CommandFailed, run};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    crate::workspace_root().join("deploy/charts/capstan")
}

/// The chart's generated CRDs (`cargo xtask crds` writes them).
pub fn crds_dir() -> PathBuf {
    chart_dir().join("crds")
}

/// Renders the chart as release `release` in `namespace` with `--set` overrides (`key=value`).
/// The objects come back as JSON values, in Helm's order.
pub fn template(helm: &Path, release: &str, namespace: &str, set: &[&str]) -> Result<Vec<Value>, CommandFailed> {
    let mut command = Command::new(helm);
    command
        .args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for value in set {
        command.args(["--set", value]);
    }
    let yaml = run(&mut command)?;
    parse_documents(&yaml).map_err(|detail| CommandFailed {
        command: "helm template (output)".into(),
        detail,
    })
}

/// Every non-empty YAML document as JSON.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).map_err(|e| format!("not YAML: {e}"))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The one rendered object of `kind` whose name ends with `name_suffix`, if any.
pub fn find<'a>(objects: &'a [Value], kind: &str, name_suffix: &str) -> Option<&'a Value> {
    objects.iter().find(|object| {
        object["kind"] == kind
            && object["metadata"]["name"]
                .as_str()
                .is_some_and(|name| name.ends_with(name_suffix))
    })
}

/// Kinds of the rendered objects, in order.
pub fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|object| object["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}
