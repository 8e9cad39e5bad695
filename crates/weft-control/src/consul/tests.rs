use super::*;

fn uri(s: &str) -> Uri {
    s.parse().unwrap()
}

#[test]
fn blocking_queries_take_consuls_defaults_and_cap() {
    assert_eq!(blocking_of(&uri("/v1/catalog/services")).ok().flatten(), None);
    let b = |s: &str| blocking_of(&uri(s)).ok().flatten().unwrap();
    assert_eq!(b("/x?index=7"), Blocking { index: 7, wait: DEFAULT_WAIT });
    assert_eq!(b("/x?index=7&wait=5s"), Blocking { index: 7, wait: Duration::from_secs(5) });
    assert_eq!(b("/x?index=7&wait=100ms").wait, Duration::from_millis(100));
    assert_eq!(b("/x?index=7&wait=1h").wait, MAX_WAIT);
    let err = |s: &str| blocking_of(&uri(s)).err().map(|e| e.1).unwrap();
    assert!(err("/x?index=abc").starts_with("index: \"abc\" is not a number"), "{}", err("/x?index=abc"));
    assert!(err("/x?index=1&wait=soon").starts_with("wait: "), "{}", err("/x?index=1&wait=soon"));
    assert_eq!(extra_time(&uri("/x?index=1&wait=20s")), Duration::from_secs(20));
    assert_eq!(extra_time(&uri("/x")), Duration::ZERO);
}
