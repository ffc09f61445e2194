//! The JSON Schemas in `schemas/` are generated from the wire types
//! (`nova_shared::schema`) and cannot drift: this test fails when a
//! committed file differs from what the types generate. After changing a
//! wire type, write them again and commit the difference:
//!
//! ```sh
//! NOVA_WRITE_SCHEMAS=1 cargo test -p nova-e2e --test schemas
//! ```

use nova_e2e::workspace_root;

#[test]
fn committed_schemas_are_the_generated_ones() {
    let dir = workspace_root().join("schemas");
    let write = std::env::var_os("NOVA_WRITE_SCHEMAS").is_some();
    let mut stale = Vec::new();
    for file in nova_shared::schema::files() {
        let path = dir.join(file.name);
        let text = file.text();
        if write {
            std::fs::write(&path, &text).expect("write schema");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            stale.push(file.name);
        }
    }
    assert!(
        stale.is_empty(),
        "schemas/ differ from what the types generate: {stale:?}; run \
         NOVA_WRITE_SCHEMAS=1 cargo test -p nova-e2e --test schemas and commit the result"
    );
}

#[test]
fn every_generated_schema_is_listed_in_the_schemas_readme() {
    let readme = std::fs::read_to_string(workspace_root().join("schemas/README.md")).unwrap();
    for file in nova_shared::schema::files() {
        assert!(
            readme.contains(file.name),
            "{} not in schemas/README.md",
            file.name
        );
    }
}
