//! The recommended `app.kubernetes.io/*` labels every object capstan creates carries.
use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "capstan";

/// Labels that select the objects of one instance of an application: stable for the object's
/// lifetime, so they are safe in a Deployment's or StatefulSet's immutable selector.
pub fn selector_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), app.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
    ])
}

/// Selector labels plus `managed-by`, for the objects' own metadata.
pub fn standard_labels(app: &str, instance: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(app, instance);
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels
}

/// A label selector string matching everything capstan manages for `app`.
pub fn managed_selector(app: &str) -> String {
    format!("{NAME}={app},{MANAGED_BY}={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_labels_extend_selector_labels_with_managed_by() {
        let labels = standard_labels("memcached", "cache-1");
        assert_eq!(labels.get(NAME).map(String::as_str), Some("memcached"));
        assert_eq!(labels.get(INSTANCE).map(String::as_str), Some("cache-1"));
        assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("capstan"));
        assert!(
            selector_labels("memcached", "cache-1")
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        );
        assert_eq!(
            managed_selector("memcached"),
            "app.kubernetes.io/name=memcached,app.kubernetes.io/managed-by=capstan"
        );
    }
}
