use crate::resource::parse_documents;

fn err(yaml: &str) -> String {
    parse_documents(yaml).unwrap_err().to_string()
}

const HEAD: &str = "apiVersion: weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n";

#[test]
fn a_policy_reads_with_istio_shaped_rules() {
    let yaml = format!(
        "{HEAD}spec:\n  targetRef: {{kind: Service, name: api}}\n  action: DENY\n  rules:\n  - from: [{{source: {{principals: ['spiffe://mesh.local/ns/web/*'], ipBlocks: [10.0.0.0/8]}}}}]\n    to: [{{operation: {{methods: [POST], paths: ['/admin/*'], ports: [8080]}}}}]\n    when: [{{key: 'request.auth.claims[groups]', values: [admin]}}]\n"
    );
    let rs = parse_documents(&yaml).unwrap();
    let crate::resource::Resource::AuthorizationPolicy(p) = &rs[0] else { panic!("{rs:?}") };
    assert_eq!(p.spec.action, super::Action::Deny);
    assert_eq!(p.spec.rules[0].l7_field().as_deref(), Some("to[0].operation.methods"));
    assert_eq!(p.spec.rules[0].ports(), [8080]);
}

#[test]
fn bad_fields_are_named_with_the_fix() {
    let e = err(&format!("{HEAD}spec:\n  rules:\n  - from: [{{source: {{ipBlocks: [10.0.0.0/33]}}}}]\n"));
    assert!(e.contains("spec.rules[0].from[0].source.ipBlocks[0]") && e.contains("0-32"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  rules:\n  - when: [{{key: 'source.ip', values: [x]}}]\n"));
    assert!(e.contains("spec.rules[0].when[0].key") && e.contains("request.headers[<name>]"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  action: CUSTOM\n"));
    assert!(e.contains("spec.provider") && e.contains("extensionProviders"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  action: ALLOW\n  provider: {{name: x}}\n"));
    assert!(e.contains("spec.provider") && e.contains("only action CUSTOM"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  rules:\n  - to: [{{operation: {{paths: [admin]}}}}]\n"));
    assert!(e.contains("spec.rules[0].to[0].operation.paths[0]") && e.contains("start with '/'"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  rules:\n  - to: [{{operation: {{grpcMethods: [/a.B/C]}}}}]\n"));
    assert!(e.contains("grpcMethods[0]") && e.contains("package.Service/Method"), "{e}");
    let e = err(&format!("{HEAD}spec:\n  action: MAYBE\n"));
    assert!(e.contains("spec.action"), "{e}");
}

#[test]
fn an_l7_rule_on_an_opaque_tcp_port_is_refused_when_applied() {
    let svc = "apiVersion: weft.io/v1alpha1\nkind: Service\nmetadata: {name: db, namespace: shop}\nspec:\n  ports: [{port: 5432, protocol: tcp}, {port: 8080, protocol: http1}]\n---\n";
    let l7 = format!("{svc}{HEAD}spec:\n  targetRef: {{kind: Service, name: db}}\n  rules:\n  - to: [{{operation: {{paths: ['/x']}}}}]\n");
    let rs = parse_documents(&l7).unwrap();
    let e = crate::resource::check_references(rs.iter()).unwrap_err().to_string();
    assert!(
        e.contains("AuthorizationPolicy shop/p") && e.contains("to[0].operation.paths") && e.contains("5432"),
        "{e}"
    );
    // Restricted to the HTTP port: accepted.
    let ok = format!("{svc}{HEAD}spec:\n  targetRef: {{kind: Service, name: db}}\n  rules:\n  - to: [{{operation: {{paths: ['/x'], ports: [8080]}}}}]\n");
    crate::resource::check_references(parse_documents(&ok).unwrap().iter()).unwrap();
    // L4 only on the TCP port: accepted.
    let l4 = format!("{svc}{HEAD}spec:\n  targetRef: {{kind: Service, name: db}}\n  rules:\n  - from: [{{source: {{namespaces: [web]}}}}]\n    to: [{{operation: {{ports: [5432]}}}}]\n");
    crate::resource::check_references(parse_documents(&l4).unwrap().iter()).unwrap();
    // A namespace-wide policy naming the TCP port with an L7 field: refused.
    let ns = format!("{svc}{HEAD}spec:\n  rules:\n  - to: [{{operation: {{methods: [GET], ports: [5432]}}}}]\n");
    let e = crate::resource::check_references(parse_documents(&ns).unwrap().iter()).unwrap_err().to_string();
    assert!(e.contains("5432") && e.contains("Service shop/db"), "{e}");
}
