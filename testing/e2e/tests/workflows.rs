//! The GitHub workflows parse and carry what the project relies on: CI runs fmt, clippy and the
//! one test command in a privileged Debian container with `CI=true`; e2e runs kind; release pushes
//! the image on tags. GitHub itself is the final judge; this catches broken YAML and lost steps.
use std::path::PathBuf;

use serde_yaml::Value;

fn workflow(name: &str) -> Value {
    let path: PathBuf = capstan_e2e::workspace_root().join(".github/workflows").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    check_shape(name, &value);
    value
}

/// The keys GitHub requires: a name, triggers, and jobs that each have `runs-on` and steps that
/// each either `run` or `uses` something.
fn check_shape(name: &str, workflow: &Value) {
    assert!(workflow["name"].as_str().is_some(), "{name}: a name");
    assert!(!workflow["on"].is_null(), "{name}: `on` triggers");
    let jobs = workflow["jobs"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{name}: `jobs` is a map"));
    assert!(!jobs.is_empty(), "{name}: at least one job");
    for (job_name, job) in jobs {
        let job_name = job_name.as_str().unwrap_or_default();
        assert!(job["runs-on"].as_str().is_some(), "{name}/{job_name}: runs-on");
        let steps = job["steps"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name}/{job_name}: steps is a list"));
        assert!(!steps.is_empty(), "{name}/{job_name}: steps");
        for step in steps {
            let runs = step["run"].as_str().is_some();
            let uses = step["uses"].as_str().is_some_and(|u| u.contains('@'));
            assert!(
                runs != uses,
                "{name}/{job_name}: a step either runs a command or uses a pinned action: {step:?}"
            );
        }
    }
}

fn run_lines(workflow: &Value) -> String {
    let mut lines = String::new();
    for (_, job) in workflow["jobs"].as_mapping().into_iter().flatten() {
        for step in job["steps"].as_sequence().into_iter().flatten() {
            if let Some(run) = step["run"].as_str() {
                lines.push_str(run);
                lines.push('\n');
            }
        }
    }
    lines
}

#[test]
fn ci_runs_fmt_clippy_and_the_test_command_in_a_privileged_debian_container() {
    let ci = workflow("ci.yml");
    assert_eq!(
        ci["env"]["CI"].as_str(),
        Some("true"),
        "CI=true turns skips into failures"
    );
    let runs = run_lines(&ci);
    assert!(runs.contains("cargo fmt --all -- --check"), "{runs}");
    assert!(
        runs.contains("cargo clippy --workspace --all-targets -- -D warnings"),
        "{runs}"
    );
    assert!(runs.contains("bash .ci/run"), "{runs}");
    let ci_run = std::fs::read_to_string(capstan_e2e::workspace_root().join(".ci/run")).expect(".ci/run");
    assert!(ci_run.contains("cargo xtask test"), ".ci/run runs the one test command");
    let test = &ci["jobs"]["test"];
    assert_eq!(test["container"]["image"].as_str(), Some("debian:bookworm"));
    assert!(
        test["container"]["options"]
            .as_str()
            .is_some_and(|o| o.contains("--privileged")),
        "the local node needs a privileged container"
    );
}

#[test]
fn e2e_runs_the_kind_provider() {
    let e2e = workflow("e2e.yml");
    let runs = run_lines(&e2e);
    assert!(runs.contains("cargo xtask e2e --cluster kind"), "{runs}");
}

#[test]
fn release_builds_and_pushes_the_image_on_tags() {
    let release = workflow("release.yml");
    let tags = release["on"]["push"]["tags"].as_sequence().expect("on.push.tags");
    assert!(!tags.is_empty());
    let steps = release["jobs"]["image"]["steps"].as_sequence().expect("image steps");
    let build = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    assert_eq!(build["with"]["push"].as_bool(), Some(true));
    assert_eq!(build["with"]["file"].as_str(), Some("Dockerfile"));
    assert!(
        capstan_e2e::workspace_root().join("Dockerfile").is_file(),
        "the Dockerfile the release builds"
    );
    assert_eq!(release["permissions"]["packages"].as_str(), Some("write"));
}
