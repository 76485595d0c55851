//! The configuration reference stays true: every `FLOE_*` setting the code
//! reads is documented, and the SAM template sets only settings that exist.

use floe_tests::read_repo_file as read;
use std::collections::BTreeSet;

/// The `FLOE_[A-Z0-9_]+` names in a text.
fn settings(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("FLOE_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let name = name.trim_end_matches('_').to_string();
        if name.len() > "FLOE_".len() {
            out.insert(name);
        }
        rest = &rest[at + 5..];
    }
    out
}

#[test]
fn every_setting_the_code_reads_is_documented_and_the_template_sets_only_those() {
    let code = settings(&read("core/src/config.rs"));
    assert!(code.len() >= 20, "{code:?}");
    let documented = settings(&read("docs/configuration.md"));
    let missing: Vec<_> = code.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&code).collect();
    assert!(unknown.is_empty(), "documented but never read: {unknown:?}");
    let template = settings(&read("infra/template.yaml"));
    assert!(template.len() >= 8, "{template:?}");
    let bogus: Vec<_> = template.difference(&code).collect();
    assert!(
        bogus.is_empty(),
        "the template sets unknown settings: {bogus:?}"
    );
}

#[test]
fn the_api_reference_lists_every_operation_of_the_openapi_description() {
    let openapi: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let reference = read("docs/api.md");
    let methods = ["get", "put", "post", "delete", "patch"];
    let mut operations = 0;
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if !methods.contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let row = format!("`{} {path}`", method.to_uppercase());
            assert!(reference.contains(&row), "docs/api.md lacks {row}");
        }
    }
    assert!(operations >= 10, "{operations}");
}
