//! What ships must not rest on test tools: no package under `crates/` may reach a package under
//! `testing/` through normal dependencies. Dev-dependencies may (a crate's tests use the local
//! control plane), and so may the tools themselves. Checked on `cargo metadata`'s resolve graph
//! with every feature on, so an optional dependency behind a feature counts too.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cmd;

/// Where a package lives in the workspace, by the folder its manifest sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Shipped,
    TestTool,
    Elsewhere,
}

struct Graph {
    names: HashMap<String, String>,
    places: HashMap<String, Place>,
    /// Each package's normal (not dev, not build) dependencies.
    normal_deps: HashMap<String, Vec<String>>,
}

impl Graph {
    fn from_metadata(metadata: &Value) -> anyhow::Result<Self> {
        let root = PathBuf::from(metadata["workspace_root"].as_str().context("workspace_root")?);
        let (shipped, tools) = (root.join("crates"), root.join("testing"));
        let mut names = HashMap::new();
        let mut places = HashMap::new();
        for package in metadata["packages"].as_array().context("packages")? {
            let id = package["id"].as_str().context("package id")?.to_owned();
            let manifest = Path::new(package["manifest_path"].as_str().context("manifest_path")?);
            let place = if manifest.starts_with(&shipped) {
                Place::Shipped
            } else if manifest.starts_with(&tools) {
                Place::TestTool
            } else {
                Place::Elsewhere
            };
            names.insert(id.clone(), package["name"].as_str().unwrap_or(&id).to_owned());
            places.insert(id, place);
        }
        let mut normal_deps = HashMap::new();
        for node in metadata["resolve"]["nodes"].as_array().context("resolve.nodes")? {
            let id = node["id"].as_str().context("node id")?.to_owned();
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| {
                    // A normal dependency's kind is null; one edge may be normal and dev at once.
                    dep["dep_kinds"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
                })
                .filter_map(|dep| dep["pkg"].as_str().map(str::to_owned))
                .collect();
            normal_deps.insert(id, deps);
        }
        Ok(Self {
            names,
            places,
            normal_deps,
        })
    }

    fn place(&self, id: &str) -> Place {
        self.places.get(id).copied().unwrap_or(Place::Elsewhere)
    }

    /// For each shipped package that reaches a test tool: the shortest such path, by name.
    fn shipped_paths_to_test_tools(&self) -> BTreeMap<String, Vec<String>> {
        let mut found = BTreeMap::new();
        for start in self.places.keys().filter(|id| self.place(id) == Place::Shipped) {
            if let Some(path) = self.path_to_test_tool(start) {
                found.insert(self.names[start].clone(), path);
            }
        }
        found
    }

    fn path_to_test_tool(&self, start: &str) -> Option<Vec<String>> {
        let mut came_from: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(id) = queue.pop_front() {
            if self.place(id) == Place::TestTool {
                let mut path = vec![self.names[id].clone()];
                let mut at = id;
                while let Some(&previous) = came_from.get(at) {
                    path.push(self.names[previous].clone());
                    at = previous;
                }
                path.reverse();
                return Some(path);
            }
            for dep in self.normal_deps.get(id).into_iter().flatten() {
                if dep != start && !came_from.contains_key(dep.as_str()) {
                    came_from.insert(dep, id);
                    queue.push_back(dep);
                }
            }
        }
        None
    }
}

fn workspace_metadata() -> anyhow::Result<Value> {
    let output = cmd::cargo()
        .args(["metadata", "--format-version", "1", "--all-features"])
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!("`cargo metadata` failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")
}

#[test]
fn no_shipped_crate_depends_on_a_test_crate() {
    let graph = Graph::from_metadata(&workspace_metadata().expect("cargo metadata")).expect("a resolve graph");
    assert!(
        graph.places.values().any(|p| *p == Place::Shipped) && graph.places.values().any(|p| *p == Place::TestTool),
        "the workspace has packages under crates/ and testing/"
    );
    let found = graph.shipped_paths_to_test_tools();
    let shown: Vec<String> = found.values().map(|path| path.join(" → ")).collect();
    assert!(
        found.is_empty(),
        "shipped crates depend (normal dependencies) on test crates:\n  {}",
        shown.join("\n  ")
    );
}
