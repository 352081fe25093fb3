use k8s_openapi::api::core::v1::Pod;
use kube::{
    ResourceExt,
    core::PartialObjectMeta,
    runtime::reflector::{ObjectRef, Store},
};
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use crate::Foo;

/// Which Foos name a Pod as their friend, keyed by (namespace, Pod name).
///
/// Filled from the Foo watch as Foos arrive. Entries go stale when a Foo is deleted or renames
/// its friend; [`FriendIndex::foos_naming`] checks every candidate against the Foo cache and
/// drops stale ones, so the index never wakes a Foo that does not name the Pod.
/// (namespace, friend Pod name) → names of the Foos naming it.
type Friends = HashMap<(String, String), BTreeSet<String>>;

#[derive(Clone, Default)]
pub struct FriendIndex {
    friends: Arc<Mutex<Friends>>,
}

impl FriendIndex {
    pub fn record(&self, foo: &Foo) {
        let Some(namespace) = foo.namespace() else { return };
        self.lock()
            .entry((namespace, foo.spec.name.clone()))
            .or_default()
            .insert(foo.name_any());
    }

    /// The Foos (from `foos`, the Foo cache) whose `spec.name` is `pod`'s name.
    pub fn foos_naming(&self, pod: &PartialObjectMeta<Pod>, foos: &Store<Foo>) -> Vec<ObjectRef<Foo>> {
        let Some(namespace) = pod.namespace() else {
            return Vec::new();
        };
        let key = (namespace, pod.name_any());
        let mut index = self.lock();
        let Some(names) = index.get_mut(&key) else {
            return Vec::new();
        };
        names.retain(|name| {
            let foo_ref = ObjectRef::new(name).within(&key.0);
            foos.get(&foo_ref).is_some_and(|foo| foo.spec.name == key.1)
        });
        let refs = names.iter().map(|name| ObjectRef::new(name).within(&key.0)).collect();
        if names.is_empty() {
            index.remove(&key);
        }
        refs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Friends> {
        self.friends.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FooSpec;
    use capstan_runtime::informer::store_from;
    use kube::api::ObjectMeta;

    fn foo(ns: &str, name: &str, friend: &str) -> Foo {
        let mut foo = Foo::new(
            name,
            FooSpec {
                name: friend.to_owned(),
            },
        );
        foo.metadata.namespace = Some(ns.to_owned());
        foo
    }

    fn pod(ns: &str, name: &str) -> PartialObjectMeta<Pod> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn names(refs: Vec<ObjectRef<Foo>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_pod_wakes_only_the_foos_that_name_it_in_its_namespace() {
        let foos = [
            foo("a", "foo-01", "jack"),
            foo("a", "foo-02", "jack"),
            foo("a", "foo-03", "joe"),
            foo("b", "foo-04", "jack"),
        ];
        let index = FriendIndex::default();
        foos.iter().for_each(|f| index.record(f));
        let store = store_from(foos);
        assert_eq!(
            names(index.foos_naming(&pod("a", "jack"), &store)),
            ["foo-01", "foo-02"]
        );
        assert_eq!(names(index.foos_naming(&pod("b", "jack"), &store)), ["foo-04"]);
        assert!(index.foos_naming(&pod("a", "nobody"), &store).is_empty());
    }

    #[test]
    fn renamed_and_deleted_foos_are_dropped_from_the_index() {
        let index = FriendIndex::default();
        index.record(&foo("a", "foo-01", "jack"));
        index.record(&foo("a", "gone", "jack"));
        // foo-01 now names joe; "gone" was deleted (not in the cache).
        let renamed = foo("a", "foo-01", "joe");
        index.record(&renamed);
        let store = store_from([renamed]);
        assert!(index.foos_naming(&pod("a", "jack"), &store).is_empty());
        assert_eq!(names(index.foos_naming(&pod("a", "joe"), &store)), ["foo-01"]);
        assert!(
            index.lock().get(&("a".to_owned(), "jack".to_owned())).is_none(),
            "stale key removed"
        );
    }
}
