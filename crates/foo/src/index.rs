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

/// (namespace, friend Pod name) → names of the Foos naming it.
type Friends = HashMap<(String, String), BTreeSet<String>>;

#[derive(Default)]
struct Entries {
    friends: Friends,
    /// (namespace, Foo name) → the friend it is listed under, so a rename or delete drops it.
    friend_of: HashMap<(String, String), String>,
}

/// Which Foos name a Pod as their friend, keyed by (namespace, Pod name).
///
/// Fed by the Foo stream ([`FriendIndex::observe`]): a Foo is listed under the friend it names
/// now, moved when it names another, and dropped when it is deleted, so the index holds one
/// entry per live Foo, not one per name a Foo ever had. [`FriendIndex::foos_naming`] still
/// checks candidates against the Foo cache, so a Pod event never wakes a Foo that does not name
/// it even while the stream lags behind the cache.
#[derive(Clone, Default)]
pub struct FriendIndex {
    entries: Arc<Mutex<Entries>>,
}

impl FriendIndex {
    /// Takes in a Foo from the Foo stream (applied or deleted): its entry follows what `foos`,
    /// the Foo cache, holds now.
    pub fn observe(&self, foo: &Foo, foos: &Store<Foo>) {
        match foos.get(&ObjectRef::from_obj(foo)) {
            Some(current) => self.record(&current),
            None => self.forget(foo),
        }
    }

    /// Lists `foo` under the friend it names, and under no other.
    pub fn record(&self, foo: &Foo) {
        let Some(namespace) = foo.namespace() else { return };
        let key = (namespace, foo.name_any());
        let mut entries = self.lock();
        if entries.friend_of.get(&key) == Some(&foo.spec.name) {
            return;
        }
        entries.unlist(&key);
        entries
            .friends
            .entry((key.0.clone(), foo.spec.name.clone()))
            .or_default()
            .insert(key.1.clone());
        entries.friend_of.insert(key, foo.spec.name.clone());
    }

    /// Drops a deleted Foo.
    pub fn forget(&self, foo: &Foo) {
        let Some(namespace) = foo.namespace() else { return };
        self.lock().unlist(&(namespace, foo.name_any()));
    }

    /// The Foos (from `foos`, the Foo cache) whose `spec.name` is `pod`'s name.
    pub fn foos_naming(&self, pod: &PartialObjectMeta<Pod>, foos: &Store<Foo>) -> Vec<ObjectRef<Foo>> {
        let Some(namespace) = pod.namespace() else {
            return Vec::new();
        };
        let pod_name = pod.name_any();
        let entries = self.lock();
        let Some(names) = entries.friends.get(&(namespace.clone(), pod_name.clone())) else {
            return Vec::new();
        };
        names
            .iter()
            .map(|name| ObjectRef::new(name).within(&namespace))
            .filter(|foo_ref| foos.get(foo_ref).is_some_and(|foo| foo.spec.name == pod_name))
            .collect()
    }

    /// How many Foos the index lists.
    pub fn len(&self) -> usize {
        self.lock().friend_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        capstan_runtime::lock(&self.entries)
    }
}

/// Keeps what Foo reads of a Pod, its namespace and name: Foo caches every Pod in its scope,
/// and a Pod's labels and owner references would otherwise be most of that cache.
pub fn trim_pod(pod: &mut PartialObjectMeta<Pod>) {
    let metadata = std::mem::take(&mut pod.metadata);
    pod.metadata.name = metadata.name;
    pod.metadata.namespace = metadata.namespace;
}

impl Entries {
    /// Removes the Foo `key` from the friend it was listed under, and that friend's entry once
    /// no Foo names it.
    fn unlist(&mut self, key: &(String, String)) {
        let Some(friend) = self.friend_of.remove(key) else {
            return;
        };
        let friend_key = (key.0.clone(), friend);
        if let Some(names) = self.friends.get_mut(&friend_key) {
            names.remove(&key.1);
            if names.is_empty() {
                self.friends.remove(&friend_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FooSpec;
    use capstan_runtime::store_from;
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
    fn a_trimmed_pod_keeps_only_its_name_and_namespace_and_wakes_the_same_foos() {
        let foos = [foo("a", "foo-01", "jack"), foo("b", "foo-02", "jack")];
        let index = FriendIndex::default();
        foos.iter().for_each(|f| index.record(f));
        let store = store_from(foos);
        let mut full = pod("a", "jack");
        full.metadata.uid = Some("uid".into());
        full.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        full.metadata.generate_name = Some("ja".into());
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        assert_eq!(trimmed.metadata, pod("a", "jack").metadata);
        assert_eq!(
            names(index.foos_naming(&trimmed, &store)),
            names(index.foos_naming(&full, &store))
        );
        assert_eq!(names(index.foos_naming(&trimmed, &store)), ["foo-01"]);
    }

    #[test]
    fn a_renamed_friend_moves_the_foo_and_drops_the_old_entry() {
        let index = FriendIndex::default();
        let jack = foo("a", "foo-01", "jack");
        index.observe(&jack, &store_from([jack.clone()]));
        let renamed = foo("a", "foo-01", "joe");
        let store = store_from([renamed.clone()]);
        index.observe(&renamed, &store);
        assert!(index.foos_naming(&pod("a", "jack"), &store).is_empty());
        assert_eq!(names(index.foos_naming(&pod("a", "joe"), &store)), ["foo-01"]);
        let entries = index.lock();
        assert!(
            !entries.friends.contains_key(&("a".to_owned(), "jack".to_owned())),
            "the old friend's entry is dropped without a Pod event for it"
        );
        assert_eq!(entries.friends.len(), 1);
        assert_eq!(entries.friend_of.len(), 1);
    }

    #[test]
    fn a_deleted_foo_is_dropped_from_the_index() {
        let index = FriendIndex::default();
        let foos = [
            foo("a", "foo-01", "jack"),
            foo("a", "foo-02", "jack"),
            foo("b", "foo-01", "jack"),
        ];
        let store = store_from(foos.clone());
        foos.iter().for_each(|f| index.observe(f, &store));
        assert_eq!(index.len(), 3);

        // foo-01 in "a" is deleted: the stream hands it over as last seen, the cache no longer has it.
        let store = store_from([foos[1].clone(), foos[2].clone()]);
        index.observe(&foos[0], &store);
        assert_eq!(index.len(), 2);
        assert_eq!(names(index.foos_naming(&pod("a", "jack"), &store)), ["foo-02"]);
        index.observe(&foos[1], &store_from([foos[2].clone()]));
        assert!(
            !index.lock().friends.contains_key(&("a".to_owned(), "jack".to_owned())),
            "an entry no Foo names is dropped"
        );
        assert_eq!(index.len(), 1, "the Foo of the same name in another namespace stays");
    }

    #[test]
    fn churn_leaves_one_entry_per_live_foo() {
        let index = FriendIndex::default();
        let mut live = Vec::new();
        for round in 0..50 {
            let f = foo("a", &format!("foo-{}", round % 5), &format!("pod-{round}"));
            live.retain(|l: &Foo| l.metadata.name != f.metadata.name);
            live.push(f.clone());
            index.observe(&f, &store_from(live.clone()));
        }
        assert_eq!(index.len(), 5);
        assert_eq!(index.lock().friends.len(), 5, "renamed friends left no entries behind");
    }
}
