//! The OpenAPI document: it lists every route the router serves (and no
//! other), every reference in it resolves, and the checked-in
//! `openapi.json` is the generated one.

mod common;
mod harness;
mod nbd_common;

use std::collections::BTreeSet;

use common::Pool;
use serde_json::Value;

/// The routes of the management API, as designed.
const ROUTES: [(&str, &str); 55] = [
    ("get", "/v1/pool"),
    ("post", "/v1/pool/gc"),
    ("post", "/v1/pool/check"),
    ("get", "/v1/disks"),
    ("post", "/v1/disks"),
    ("get", "/v1/disks/{name}"),
    ("delete", "/v1/disks/{name}"),
    ("post", "/v1/disks/{name}/fail"),
    ("post", "/v1/disks/{name}/reinstate"),
    ("post", "/v1/disks/{name}/replace"),
    ("post", "/v1/disks/{name}/inject"),
    ("get", "/v1/groups"),
    ("post", "/v1/groups"),
    ("get", "/v1/groups/{name}"),
    ("delete", "/v1/groups/{name}"),
    ("post", "/v1/groups/{name}/extend"),
    ("post", "/v1/groups/{name}/reshape"),
    ("get", "/v1/groups/{name}/reshape"),
    ("get", "/v1/volumes"),
    ("post", "/v1/volumes"),
    ("get", "/v1/volumes/{name}"),
    ("delete", "/v1/volumes/{name}"),
    ("post", "/v1/volumes/{name}/grow"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
    ("post", "/v1/jobs/{id}/pause"),
    ("post", "/v1/jobs/{id}/resume"),
    ("post", "/v1/jobs/{id}/cancel"),
    ("post", "/v1/jobs/{id}/rate"),
    ("get", "/v1/copies"),
    ("post", "/v1/copies"),
    ("get", "/v1/copies/{name}"),
    ("delete", "/v1/copies/{name}"),
    ("post", "/v1/copies/{name}/restore"),
    ("post", "/v1/copies/{name}/split"),
    ("get", "/v1/pairs"),
    ("post", "/v1/pairs"),
    ("get", "/v1/pairs/{name}"),
    ("delete", "/v1/pairs/{name}"),
    ("post", "/v1/pairs/{name}/split"),
    ("post", "/v1/pairs/{name}/resync"),
    ("post", "/v1/pairs/{name}/restore"),
    ("post", "/v1/pair-groups/{name}/split"),
    ("get", "/v1/svol-groups"),
    ("post", "/v1/svol-groups"),
    ("get", "/v1/svol-groups/{name}"),
    ("delete", "/v1/svol-groups/{name}"),
    ("post", "/v1/svol-groups/{name}/restore"),
    ("get", "/v1/sparing"),
    ("put", "/v1/sparing/policy"),
    ("post", "/v1/sparing/start"),
    ("post", "/v1/sparing/work-volumes"),
    ("delete", "/v1/sparing/work-volumes/{volume}"),
    ("post", "/v1/sparing/work-disks"),
    ("delete", "/v1/sparing/work-disks/{disk}"),
];

fn doc() -> Value {
    serde_json::from_str(&ferrosan::api::openapi_json()).unwrap()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item");
            methods.keys().map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

#[test]
fn the_document_lists_exactly_the_routes() {
    let want: BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented(&doc()), want);
}

#[test]
fn every_documented_route_is_served() {
    let p = Pool::start();
    for (method, path) in ROUTES {
        let concrete = path.replace("{name}", "x").replace("{id}", "1");
        let r = p.call(&method.to_uppercase(), &concrete, Some("{}"));
        let routed = !(r.status == 405 || r.body.contains("no such route"));
        assert!(routed, "{method} {path}: {} {}", r.status, r.body);
    }
}

#[test]
fn every_operation_has_a_summary_responses_and_errors_as_api_error() {
    let doc = doc();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        let id = format!("{method} {path}");
        assert!(op["summary"].is_string(), "{id} has no summary");
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.keys().any(|k| k.starts_with('2')), "{id}");
        for (status, resp) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ApiError", "{id} {status}");
            }
        }
        if path.contains('{') {
            let params = op["parameters"].as_array().expect("parameters");
            assert!(params.iter().any(|p| p["in"] == "path"), "{id}");
        }
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = doc();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(&r);
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} dangles"
        );
    }
    let add = &doc["components"]["schemas"]["DiskAddRequest"];
    assert_eq!(add["additionalProperties"], false, "unknown fields refused");
}

#[test]
fn copy_schemas_name_the_allowed_values_and_refuse_unknown_fields() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let names = |schema: &str| schemas[schema]["enum"].clone();
    assert_eq!(names("CopyMode"), serde_json::json!(["cow", "row"]));
    let all: Vec<String> = ferrosan::copy::map::Scheme::ALL
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names("Scheme"), serde_json::json!(all));
    assert_eq!(
        names("SplitPolicy"),
        serde_json::json!(["move-smaller", "move-larger"])
    );
    for body in [
        "CopyCreateRequest",
        "CopySplitRequest",
        "CopyRestoreRequest",
    ] {
        assert_eq!(schemas[body]["additionalProperties"], false, "{body}");
    }
    let create = &doc["paths"]["/v1/copies"]["post"];
    assert!(create["responses"]["201"].is_object());
    for verb in ["restore", "split"] {
        let op = &doc["paths"][format!("/v1/copies/{{name}}/{verb}")]["post"];
        assert!(op["responses"]["202"].is_object(), "{verb}");
        let body = &op["requestBody"];
        assert_ne!(body["required"], true, "{verb}: the body may be left out");
        let schema = &body["content"]["application/json"]["schema"]["oneOf"];
        assert_eq!(schema[1]["type"], "null", "{verb}: {schema}");
    }
    let tags = doc["tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["name"] == "copies"));
}

#[test]
fn served_document_is_the_generated_one() {
    let p = Pool::start();
    let r = p.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.json(), doc());
}

#[test]
fn checked_in_openapi_json_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let generated = ferrosan::api::openapi_json();
    assert!(
        checked_in == generated,
        "openapi.json differs from the API the code serves: regenerate it with\n\
         \n    cargo run -- openapi > openapi.json\n\n\
         and review the change before committing it"
    );
}

#[test]
fn every_operation_documents_the_answers_it_can_give() {
    let doc = doc();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        let id = format!("{method} {path}");
        let answers = op["responses"].as_object().unwrap();
        let has = |status: &str| answers.contains_key(status);
        assert!(has("500") && has("503"), "{id}: the machine's faults");
        let takes_input = op["parameters"].is_array() || op["requestBody"].is_object();
        assert_eq!(has("400"), takes_input, "{id}: 400 iff it takes input");
        assert_eq!(has("413"), op["requestBody"].is_object(), "{id}: 413");
        assert!(!has("507"), "{id}: no_space is a 409 now");
        for status in answers.keys() {
            assert!(status.starts_with(['2', '4', '5']), "{id}: {status}");
        }
    }
}

#[test]
fn names_and_sizes_carry_the_engine_rules() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    let name = &schemas["Name"];
    assert_eq!(name["pattern"], ferrosan::api::views::limits::NAME_PATTERN);
    assert_eq!(
        (name["minLength"].as_u64(), name["maxLength"].as_u64()),
        (Some(1), Some(64))
    );
    let named = "#/components/schemas/Name";
    for (schema, field) in [
        ("DiskAddRequest", "name"),
        ("GroupCreateRequest", "name"),
        ("VolumeCreateRequest", "name"),
        ("VolumeCreateRequest", "group"),
        ("CopyCreateRequest", "name"),
        ("CopyCreateRequest", "source"),
        ("DiskReplaceRequest", "new"),
    ] {
        let prop = &schemas[schema]["properties"][field];
        assert_eq!(prop["$ref"], named, "{schema}.{field}");
    }
    let disks = &schemas["GroupCreateRequest"]["properties"]["disks"];
    assert_eq!(
        (disks["items"]["$ref"].as_str(), disks["minItems"].as_u64()),
        (Some(named), Some(1))
    );
    let tracks = schemas["TrackSize"]["enum"].as_array().unwrap();
    assert_eq!(
        (tracks.first(), tracks.last()),
        (Some(&4096.into()), Some(&(1 << 20).into()))
    );
    assert_eq!(schemas["StripeSize"]["enum"].as_array().unwrap().len(), 13);
    let size = &schemas["DiskAddRequest"]["properties"]["size"];
    assert_eq!(size["minimum"], 2 << 20);
    for (method, path) in ROUTES.iter().filter(|(_, p)| p.contains("{name}")) {
        let param = &doc["paths"][path][method]["parameters"][0];
        assert_eq!(param["schema"]["$ref"], named, "{method} {path}");
    }
}

#[test]
fn no_schema_uses_tuples() {
    fn walk(v: &Value, at: &str) {
        match v {
            Value::Object(m) => {
                assert!(!m.contains_key("prefixItems"), "{at} is a tuple");
                assert!(
                    !m.get("items").is_some_and(Value::is_array),
                    "{at}: array items"
                );
                m.iter().for_each(|(k, v)| walk(v, &format!("{at}/{k}")));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, at)),
            _ => {}
        }
    }
    let doc = doc();
    walk(&doc, "");
    let extents = &doc["components"]["schemas"]["VolumeInfo"]["properties"]["extents"];
    assert_eq!(extents["items"]["$ref"], "#/components/schemas/Span");
}

#[test]
fn links_name_operations_parameters_and_fields_that_exist() {
    let doc = doc();
    let mut ops = std::collections::BTreeMap::new();
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        ops.insert(op["operationId"].as_str().unwrap().to_owned(), op.clone());
    }
    let mut links = 0;
    for op in ops.values() {
        for answer in op["responses"].as_object().unwrap().values() {
            let Some(all) = answer["links"].as_object() else {
                continue;
            };
            for (name, link) in all {
                links += 1;
                let to = &ops[link["operationId"].as_str().unwrap()];
                for param in link["parameters"].as_object().into_iter().flatten() {
                    let params = to["parameters"].as_array().unwrap();
                    assert!(
                        params.iter().any(|p| p["name"] == *param.0),
                        "{name}: {param:?}"
                    );
                }
                for field in link["requestBody"].as_object().into_iter().flatten() {
                    let schema = to["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .unwrap();
                    let props = &doc["components"]["schemas"][schema]["properties"];
                    assert!(props[field.0].is_object(), "{name}: {schema}.{}", field.0);
                }
            }
        }
    }
    assert!(links >= 20, "{links} links");
}
