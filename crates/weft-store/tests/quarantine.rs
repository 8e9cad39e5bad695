//! Stored values that no longer read are set aside at open, not fatal.

mod common;

use common::TestDir;
use redb::{ReadableTable, TableDefinition};
use weft_api::resource::{parse_documents, Key, Kind};
use weft_store::{Applied, Store};

/// The store's table, as `src/redb_backend.rs` lays it out; the test damages it directly.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");

const SERVICE: &str = "
apiVersion: weft.io/v1alpha1
kind: Service
metadata: { name: api }
";

fn service(name: &str) -> Key {
    Key { kind: Kind::Service, namespace: "default".into(), name: name.into() }
}

#[test]
fn unreadable_values_are_quarantined_and_can_be_replaced_or_deleted() {
    let dir = TestDir::new("quarantine");
    {
        let store = Store::open(dir.path()).unwrap();
        store.apply(parse_documents(SERVICE).unwrap()).unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join(weft_store::FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RESOURCES).unwrap();
            let api = table.get("Service/default/api").unwrap().unwrap().value().to_vec();
            table.insert("Service/default/moved", api.as_slice()).unwrap();
            table.insert("Service/default/broken", b"{not json".as_slice()).unwrap();
            let bad_port = br#"{"apiVersion":"weft.io/v1alpha1","kind":"Service",
                "metadata":{"name":"bad","resourceVersion":"1"},"spec":{"ports":[{"port":0}]}}"#;
            table.insert("Service/default/bad", bad_port.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    let store = Store::open(dir.path()).expect("damaged values do not stop open");
    assert!(store.get(&service("api")).unwrap().is_some());
    assert_eq!(store.list(None, None).unwrap().len(), 1);
    let quarantined = store.quarantined();
    let keys: Vec<&str> = quarantined.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Service/default/bad", "Service/default/broken", "Service/default/moved"]);
    assert_eq!(quarantined[0].1, "Service default/bad: spec.ports[0].port: must be 1-65535");
    assert!(quarantined[1].1.starts_with("not a resource: "), "{quarantined:?}");
    assert!(quarantined[2].1.contains("holds Service/default/api"), "{quarantined:?}");

    // Re-applying a quarantined resource replaces it; deleting one by its key removes it.
    let fixed = parse_documents(&SERVICE.replace("name: api", "name: broken")).unwrap();
    assert_eq!(store.apply(fixed).unwrap(), [Applied::Created(service("broken"), 2)]);
    assert_eq!(store.delete(&[service("moved")]).unwrap(), 3);
    assert_eq!(store.quarantined().len(), 1);
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revision(), 3);
    let keys: Vec<String> = store.quarantined().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["Service/default/bad"]);
    assert_eq!(store.list(None, None).unwrap().len(), 2);
}
