//! The store against real redb files: writes, reads, versions, rules, persistence, damage.

mod common;

use common::TestDir;
use weft_api::resource::{parse_documents, Key, Kind, Resource};
use weft_store::{Applied, Store, StoreError};

const API: &str = r#"
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
spec:
  ports: [{ port: 8080, protocol: http1 }]
---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: { name: api-1, labels: { version: v1 } }
spec: { service: api, address: 10.0.0.5, port: 8080 }
"#;

fn docs(yaml: &str) -> Vec<Resource> {
    parse_documents(yaml).expect("test YAML parses")
}

fn key(kind: Kind, name: &str) -> Key {
    Key { kind, namespace: "default".into(), name: name.into() }
}

fn labelled(resource: &Resource, label: &str, value: &str) -> Resource {
    let mut r = resource.clone();
    r.metadata_mut().labels.insert(label.to_string(), value.to_string());
    r
}

#[test]
fn apply_get_list_delete_round_trip() {
    let dir = TestDir::new("round-trip");
    let store = Store::open(dir.path()).unwrap();
    assert!(dir.path().join(weft_store::FILE_NAME).is_file());
    assert_eq!(store.revision(), 0);

    let applied = store.apply(docs(API)).unwrap();
    let shown: Vec<String> = applied.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["Service default/api created", "Workload default/api-1 created"]);
    assert_eq!(applied[0], Applied::Created(key(Kind::Service, "api"), 1));
    assert_eq!(store.revision(), 1);

    let wl = store.get(&key(Kind::Workload, "api-1")).unwrap().unwrap();
    assert_eq!(wl.metadata().resource_version.as_deref(), Some("1"));
    assert_eq!(wl.metadata().labels["version"], "v1");
    assert_eq!(store.get(&key(Kind::Workload, "nope")).unwrap(), None);

    let all = store.list(None, None).unwrap();
    let keys: Vec<String> = all.iter().map(|r| r.key().to_string()).collect();
    assert_eq!(keys, ["Service default/api", "Workload default/api-1"]);
    assert_eq!(store.list(Some(Kind::Workload), Some("default")).unwrap(), [wl]);
    assert!(store.list(None, Some("other")).unwrap().is_empty());
    assert!(store.list(Some(Kind::MeshConfig), None).unwrap().is_empty());

    // The same again changes nothing and uses no revision.
    let again: Vec<String> = store.apply(docs(API)).unwrap().iter().map(ToString::to_string).collect();
    assert_eq!(again, ["Service default/api unchanged", "Workload default/api-1 unchanged"]);
    assert_eq!(store.revision(), 1);

    // A changed label is a change; the untouched Service keeps its version.
    let mut changed = docs(API);
    changed[1] = labelled(&changed[1], "version", "v2");
    let applied = store.apply(changed).unwrap();
    assert_eq!(
        applied,
        [Applied::Unchanged(key(Kind::Service, "api"), 1), Applied::Configured(key(Kind::Workload, "api-1"), 2),]
    );
    assert_eq!(applied[1].to_string(), "Workload default/api-1 configured");
    assert_eq!(store.revision(), 2);

    assert_eq!(store.delete(&[key(Kind::Workload, "api-1")]).unwrap(), 3);
    assert_eq!(store.get(&key(Kind::Workload, "api-1")).unwrap(), None);
    let err = store.delete(&[key(Kind::Workload, "api-1")]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), "Workload default/api-1 not found; list the resources to see what exists");
    assert_eq!(store.revision(), 3);
    assert_eq!(store.delete(&[]).unwrap(), 3, "deleting nothing uses no revision");
    assert!(store.apply(Vec::new()).unwrap().is_empty());
    assert_eq!(store.revision(), 3);
}

#[test]
fn a_stale_resource_version_is_a_conflict() {
    let dir = TestDir::new("conflict");
    let store = Store::open(dir.path()).unwrap();
    store.apply(docs(API)).unwrap();
    let svc = key(Kind::Service, "api");

    // Two writers read version 1.
    let first = store.get(&svc).unwrap().unwrap();
    let second = first.clone();
    assert_eq!(first.metadata().resource_version.as_deref(), Some("1"));

    let applied = store.apply(vec![labelled(&first, "owner", "a")]).unwrap();
    assert_eq!(applied, [Applied::Configured(svc.clone(), 2)]);

    let err = store.apply(vec![labelled(&second, "owner", "b")]).unwrap_err();
    match &err {
        StoreError::Conflict { key, expected, current } => {
            assert_eq!(key, &svc);
            assert_eq!(expected, "1");
            assert_eq!(*current, Some(2));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.starts_with("Service default/api: "), "{message}");
    assert!(message.contains("\"1\"") && message.contains("\"2\""), "{message}");
    assert!(message.contains("get it again and re-apply"), "{message}");
    let stored = store.get(&svc).unwrap().unwrap();
    assert_eq!(stored.metadata().labels["owner"], "a", "the loser wrote nothing");

    // Without a version the write is unconditional.
    let mut blind = labelled(&second, "owner", "b");
    blind.metadata_mut().resource_version = None;
    assert_eq!(store.apply(vec![blind]).unwrap(), [Applied::Configured(svc.clone(), 3)]);

    // A version for something that does not exist is a conflict too.
    let mut ghost = labelled(&second, "owner", "c");
    ghost.metadata_mut().name = "ghost".into();
    let err = store.apply(vec![ghost]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { current: None, .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(store.revision(), 3);
}

/// Writers that read, change and write back with the version they read, retrying on conflict,
/// never lose an update.
#[test]
fn concurrent_read_modify_write_loses_nothing() {
    let dir = TestDir::new("concurrent");
    let store = Store::open(dir.path()).unwrap();
    store.apply(docs(API)).unwrap();
    let svc = key(Kind::Service, "api");
    const THREADS: u64 = 4;
    const EACH: u64 = 8;
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let store = store.clone();
            let svc = svc.clone();
            s.spawn(move || {
                let mut done = 0;
                while done < EACH {
                    let current = store.get(&svc).unwrap().unwrap();
                    let n: u64 = current.metadata().labels.get("n").map_or(0, |n| n.parse().unwrap());
                    match store.apply(vec![labelled(&current, "n", &(n + 1).to_string())]) {
                        Ok(_) => done += 1,
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    let stored = store.get(&svc).unwrap().unwrap();
    assert_eq!(stored.metadata().labels["n"], (THREADS * EACH).to_string());
    assert_eq!(store.revision(), 1 + THREADS * EACH);
}

#[test]
fn a_write_with_a_broken_reference_writes_nothing() {
    let dir = TestDir::new("references");
    let store = Store::open(dir.path()).unwrap();
    let yaml = format!(
        "{API}---
apiVersion: weft.io/v1alpha1
kind: Workload
metadata: {{ name: orphan }}
spec: {{ service: missing, address: 10.0.0.6, port: 8080 }}
"
    );
    let err = store.apply(docs(&yaml)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().starts_with("Workload default/orphan: spec.service: no Service default/missing"), "{err}");
    assert_eq!(store.revision(), 0);
    for (kind, name) in [(Kind::Service, "api"), (Kind::Workload, "api-1"), (Kind::Workload, "orphan")] {
        assert_eq!(store.get(&key(kind, name)).unwrap(), None, "{name}");
    }

    // The same key twice in one write is refused rather than guessed at.
    let api = docs(API);
    let err = store.apply(vec![api[0].clone(), labelled(&api[0], "x", "y")]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    assert_eq!(store.revision(), 0);
}

/// A `Resource` built in code skips parsing; the store checks it as it would read it back.
#[test]
fn a_resource_built_in_code_is_still_validated() {
    let dir = TestDir::new("unvalidated");
    let store = Store::open(dir.path()).unwrap();
    let mut bad = docs(API).remove(0);
    bad.metadata_mut().name = "Not/A/Name".into();
    let err = store.apply(vec![bad]).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("metadata.name"), "{err}");
    assert_eq!(store.revision(), 0);
}

#[test]
fn deleting_a_service_in_use_is_refused() {
    let dir = TestDir::new("delete-in-use");
    let store = Store::open(dir.path()).unwrap();
    store.apply(docs(API)).unwrap();
    let (svc, wl) = (key(Kind::Service, "api"), key(Kind::Workload, "api-1"));

    let err = store.delete(std::slice::from_ref(&svc)).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Service default/api: cannot be deleted: Workload default/api-1 still uses it \
         (spec.service); delete that too, or change it first"
    );
    // A missing key among present ones deletes nothing either.
    let err = store.delete(&[wl.clone(), key(Kind::Service, "nope")]).unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert_eq!(store.revision(), 1);
    assert_eq!(store.list(None, None).unwrap().len(), 2);

    assert_eq!(store.delete(&[svc.clone(), wl]).unwrap(), 2);
    assert!(store.list(None, None).unwrap().is_empty());
}

#[test]
fn reopening_keeps_state_and_revision() {
    let dir = TestDir::new("reopen");
    let before = {
        let store = Store::open(dir.path()).unwrap();
        store.apply(docs(API)).unwrap();
        let extra = docs(API)[0].clone();
        let mut other = labelled(&extra, "team", "b");
        other.metadata_mut().name = "other".into();
        store.apply(vec![other]).unwrap();
        store.delete(&[key(Kind::Workload, "api-1")]).unwrap();
        store.snapshot()
    };
    assert_eq!(before.revision, 3);
    assert_eq!(before.resources.len(), 2);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.snapshot(), before);
    assert!(store.quarantined().is_empty());
    let applied = store.apply(docs(API)).unwrap();
    assert_eq!(applied[1], Applied::Created(key(Kind::Workload, "api-1"), 4));
}

#[tokio::test]
async fn subscribers_see_each_new_revision() {
    let dir = TestDir::new("watch");
    let store = Store::open(dir.path()).unwrap();
    let mut rx = store.subscribe();
    assert_eq!(*rx.borrow_and_update(), 0);

    let waiter = tokio::spawn(async move {
        rx.changed().await.expect("the store is alive");
        let seen = *rx.borrow_and_update();
        (seen, rx)
    });
    let writer = store.clone();
    tokio::task::spawn_blocking(move || writer.apply(docs(API))).await.unwrap().unwrap();
    let (seen, mut rx) =
        tokio::time::timeout(std::time::Duration::from_secs(30), waiter).await.expect("notified").unwrap();
    assert_eq!(seen, 1);

    store.delete(&[key(Kind::Workload, "api-1")]).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 2);
    // Nothing changed, nothing sent.
    store.apply(vec![docs(API).remove(0)]).unwrap();
    assert!(!rx.has_changed().unwrap());
}

#[test]
fn a_garbage_file_fails_open_with_a_clear_error() {
    let dir = TestDir::new("garbage");
    std::fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join(weft_store::FILE_NAME);
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&file, garbage).unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Storage(_)), "{err:?}");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("not a weft store"), "{message}");

    // A data directory that is a file.
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::Storage(_)), "{err:?}");
    assert!(err.to_string().contains("cannot create the data directory"), "{err}");
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = TestDir::new("locked");
    let store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Storage(_)), "{err:?}");
    assert!(err.to_string().contains("another weft control plane"), "{err}");
    drop(store);
    Store::open(dir.path()).expect("free again once closed");
}

#[test]
fn store_handles_are_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Store>();
}

#[test]
fn check_states_persist_beside_the_resources_without_a_revision() {
    let dir = TestDir::new("check-states");
    let store = Store::open(dir.path()).unwrap();
    assert!(store.check_states().unwrap().is_empty());
    store.apply(docs(API)).unwrap();
    let revision = store.revision();
    let mut revisions = store.subscribe();
    revisions.borrow_and_update();
    store
        .save_check_states(&[
            ("default/api-1/http".into(), Some(b"one".to_vec())),
            ("default/api-1/ttl".into(), Some(b"two".to_vec())),
        ])
        .unwrap();
    store.save_check_states(&[("default/api-1/http".into(), None)]).unwrap();
    assert_eq!(store.revision(), revision, "health state is no resource change");
    assert!(!revisions.has_changed().unwrap());
    let weak = store.downgrade();
    drop(store);
    assert!(weak.upgrade().is_none(), "a weak handle does not keep the store open");

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.check_states().unwrap(), vec![("default/api-1/ttl".to_string(), b"two".to_vec())]);
    assert_eq!(store.revision(), revision);
    assert_eq!(store.list(None, None).unwrap().len(), 2);
}

/// A CUSTOM AuthorizationPolicy naming a provider MeshConfig does not declare is refused with
/// the whole batch; declared in the same batch, it is accepted; removing the provider later is
/// allowed (the policy then fails closed).
#[test]
fn a_custom_policy_needs_a_declared_extension_provider() {
    let dir = TestDir::new("custom-provider");
    let store = Store::open(dir.path()).unwrap();
    let policy = "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: ask }\nspec: { action: CUSTOM, provider: { name: opa }, rules: [{}] }\n";
    let mesh = |providers: &str| {
        format!("---\napiVersion: weft.io/v1alpha1\nkind: MeshConfig\nmetadata: {{ name: mesh }}\nspec: {{ extensionProviders: [{providers}] }}\n")
    };
    let opa = "{ name: opa, kind: grpc, address: \"127.0.0.1:9191\" }";
    let err = store.apply(docs(&format!("{API}---\n{policy}"))).unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let e = err.to_string();
    assert!(
        e.contains("AuthorizationPolicy default/ask: spec.provider.name")
            && e.contains("MeshConfig extensionProviders"),
        "{e}"
    );
    assert!(store.list(None, None).unwrap().is_empty(), "the whole batch is refused");
    store.apply(docs(&format!("{policy}{}", mesh(opa)))).unwrap();
    store.apply(docs(&mesh(""))).expect("removing a provider still named is allowed");
    let err = store.apply(docs(&policy.replace("rules: [{}]", "rules: []"))).unwrap_err().to_string();
    assert!(err.contains("spec.provider.name"), "changing the policy needs the provider again: {err}");
}
