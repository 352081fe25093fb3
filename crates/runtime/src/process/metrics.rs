//! Prometheus metrics under the names controller-runtime uses, so existing dashboards work.
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::time::Duration;

use crate::Error;

/// Every metric the manager exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconcile_total: IntCounterVec,
    reconcile_errors_total: IntCounterVec,
    reconcile_time_seconds: HistogramVec,
    reconcile_errors_by_reason: IntCounterVec,
    active_workers: IntGaugeVec,
    writes_total: IntCounterVec,
    writes_skipped_total: IntCounterVec,
    leader_status: IntGaugeVec,
    deletes_total: IntCounterVec,
    task_failures_total: IntCounterVec,
    failing_objects: IntGaugeVec,
    foreign_child_watches: IntGaugeVec,
    foreign_child_wakeups_total: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        let reconcile_total = IntCounterVec::new(
            Opts::new(
                "controller_runtime_reconcile_total",
                "Total number of reconciliations per controller",
            ),
            &["controller", "result"],
        )?;
        let reconcile_errors_total = IntCounterVec::new(
            Opts::new(
                "controller_runtime_reconcile_errors_total",
                "Total number of reconciliation errors per controller",
            ),
            &["controller"],
        )?;
        let reconcile_time_seconds = HistogramVec::new(
            HistogramOpts::new(
                "controller_runtime_reconcile_time_seconds",
                "Length of time per reconciliation per controller",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["controller"],
        )?;
        let reconcile_errors_by_reason = IntCounterVec::new(
            Opts::new(
                "capstan_reconcile_errors_by_reason_total",
                "Reconciliation errors per controller and error kind",
            ),
            &["controller", "reason"],
        )?;
        let active_workers = IntGaugeVec::new(
            Opts::new(
                "controller_runtime_active_workers",
                "Number of currently running reconciles per controller",
            ),
            &["controller"],
        )?;
        let writes_total = IntCounterVec::new(
            Opts::new(
                "capstan_apply_total",
                "Server-side applies sent per controller and target",
            ),
            &["controller", "target"],
        )?;
        let writes_skipped_total = IntCounterVec::new(
            Opts::new(
                "capstan_apply_skipped_total",
                "Server-side applies not sent because the stored object already matched",
            ),
            &["controller", "target"],
        )?;
        let leader_status = IntGaugeVec::new(
            Opts::new(
                "leader_election_master_status",
                "1 while this manager holds the named lease, else 0",
            ),
            &["name"],
        )?;
        let deletes_total = IntCounterVec::new(
            Opts::new("capstan_delete_total", "Deletes sent per controller and target"),
            &["controller", "target"],
        )?;
        let task_failures_total = IntCounterVec::new(
            Opts::new(
                "capstan_background_task_failures_total",
                "Background tasks that failed or panicked and were restarted",
            ),
            &["task"],
        )?;
        let failing_objects = IntGaugeVec::new(
            Opts::new(
                "capstan_reconcile_failing_objects",
                "Objects whose last reconcile failed with an error retrying may fix, now waiting for their backoff",
            ),
            &["controller"],
        )?;
        let foreign_child_watches = IntGaugeVec::new(
            Opts::new(
                "capstan_foreign_child_watches",
                "Watches of single objects that block a child (same name, someone else's), open while the refusal is outstanding",
            ),
            &["controller"],
        )?;
        let foreign_child_wakeups_total = IntCounterVec::new(
            Opts::new(
                "capstan_foreign_child_wakeups_total",
                "Owners queued because an object that blocked their child went away or changed hands",
            ),
            &["controller"],
        )?;
        for collector in [
            Box::new(reconcile_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconcile_errors_total.clone()),
            Box::new(reconcile_time_seconds.clone()),
            Box::new(reconcile_errors_by_reason.clone()),
            Box::new(active_workers.clone()),
            Box::new(writes_total.clone()),
            Box::new(writes_skipped_total.clone()),
            Box::new(leader_status.clone()),
            Box::new(deletes_total.clone()),
            Box::new(task_failures_total.clone()),
            Box::new(failing_objects.clone()),
            Box::new(foreign_child_watches.clone()),
            Box::new(foreign_child_wakeups_total.clone()),
        ] {
            registry.register(collector)?;
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            reconcile_total,
            reconcile_errors_total,
            reconcile_time_seconds,
            reconcile_errors_by_reason,
            active_workers,
            writes_total,
            writes_skipped_total,
            leader_status,
            deletes_total,
            task_failures_total,
            failing_objects,
            foreign_child_watches,
            foreign_child_wakeups_total,
        })
    }

    /// Label values exist from the start, so dashboards show zeros rather than gaps.
    pub fn register_controller(&self, controller: &str) {
        for result in ["success", "error", "requeue", "requeue_after"] {
            self.reconcile_total.with_label_values(&[controller, result]);
        }
        self.reconcile_errors_total.with_label_values(&[controller]);
        self.active_workers.with_label_values(&[controller]);
        self.failing_objects.with_label_values(&[controller]);
        self.foreign_child_watches.with_label_values(&[controller]);
        self.foreign_child_wakeups_total.with_label_values(&[controller]);
    }

    pub fn reconcile_started(&self, controller: &str) {
        self.active_workers.with_label_values(&[controller]).inc();
    }

    pub fn reconcile_finished(&self, controller: &str, elapsed: Duration, outcome: Result<bool, &'static str>) {
        self.active_workers.with_label_values(&[controller]).dec();
        self.reconcile_time_seconds
            .with_label_values(&[controller])
            .observe(elapsed.as_secs_f64());
        match outcome {
            Ok(requeue_after) => {
                let result = if requeue_after { "requeue_after" } else { "success" };
                self.reconcile_total.with_label_values(&[controller, result]).inc();
            }
            Err(reason) => {
                self.reconcile_total.with_label_values(&[controller, "error"]).inc();
                self.reconcile_errors_total.with_label_values(&[controller]).inc();
                self.reconcile_errors_by_reason
                    .with_label_values(&[controller, reason])
                    .inc();
            }
        }
    }

    /// How many objects of `controller` hold a failure count (are being retried with backoff).
    pub fn set_failing_objects(&self, controller: &str, objects: usize) {
        self.failing_objects
            .with_label_values(&[controller])
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    /// How many single-object watches of blocking objects `controller` keeps open.
    pub fn set_foreign_child_watches(&self, controller: &str, watches: usize) {
        self.foreign_child_watches
            .with_label_values(&[controller])
            .set(i64::try_from(watches).unwrap_or(i64::MAX));
    }

    pub fn foreign_child_wakeup(&self, controller: &str) {
        self.foreign_child_wakeups_total.with_label_values(&[controller]).inc();
    }

    pub fn apply_sent(&self, controller: &str, target: &str) {
        self.writes_total.with_label_values(&[controller, target]).inc();
    }

    pub fn apply_skipped(&self, controller: &str, target: &str) {
        self.writes_skipped_total.with_label_values(&[controller, target]).inc();
    }

    pub fn delete_sent(&self, controller: &str, target: &str) {
        self.deletes_total.with_label_values(&[controller, target]).inc();
    }

    pub fn task_failed(&self, task: &str) {
        self.task_failures_total.with_label_values(&[task]).inc();
    }

    pub fn set_leader(&self, lease: &str, leader: bool) {
        self.leader_status.with_label_values(&[lease]).set(i64::from(leader));
    }

    /// The text exposition format served on `/metrics`.
    pub fn render(&self) -> Result<String, Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_controller_runtime_metric_names() {
        let metrics = Metrics::new().expect("metrics");
        metrics.register_controller("foo");
        metrics.reconcile_started("foo");
        metrics.reconcile_finished("foo", Duration::from_millis(3), Ok(false));
        metrics.reconcile_started("foo");
        metrics.reconcile_finished("foo", Duration::from_millis(3), Err("api"));
        let text = metrics.render().expect("render");
        assert!(
            text.contains(r#"controller_runtime_reconcile_total{controller="foo",result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_total{controller="foo",result="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_errors_total{controller="foo"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_reconcile_time_seconds_count{controller="foo"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"controller_runtime_active_workers{controller="foo"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capstan_reconcile_failing_objects{controller="foo"} 0"#),
            "registered at zero: {text}"
        );
        metrics.set_failing_objects("foo", 2);
        let text = metrics.render().expect("render");
        assert!(
            text.contains(r#"capstan_reconcile_failing_objects{controller="foo"} 2"#),
            "{text}"
        );
    }
}
