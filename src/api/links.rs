//! How the operations chain (OpenAPI `links`): which value of an answer
//! feeds which next request — a new volume is the source of a copy, a
//! replace's job is the one to pause. A client reads them as documentation;
//! the contract check's stateful phase follows them to reach copies and
//! jobs, which random names never find.

#![forbid(unsafe_code)]

use serde_json::{Value, json};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

use super::doc::operations;

/// One link: after `from` answers `status`, `to` may follow with these
/// parameters (runtime expressions) and body.
struct Chain {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    parameters: Vec<(&'static str, &'static str)>,
    body: Option<Value>,
}

const NAME: &str = "$response.body#/name";
const ID: &str = "$response.body#/id";

fn by_name(from: &'static str, status: &'static str, to: &[&'static str]) -> Vec<Chain> {
    let param = |to| Chain {
        from,
        status,
        to,
        parameters: vec![("name", NAME)],
        body: None,
    };
    to.iter().copied().map(param).collect()
}

fn by_id(from: &'static str, status: &'static str) -> Vec<Chain> {
    let ops = [
        "job_get",
        "job_pause",
        "job_resume",
        "job_cancel",
        "job_rate",
    ];
    let param = |to| Chain {
        from,
        status,
        to,
        parameters: vec![("id", ID)],
        body: None,
    };
    ops.into_iter().map(param).collect()
}

fn with_body(from: &'static str, status: &'static str, to: &'static str, body: Value) -> Chain {
    Chain {
        from,
        status,
        to,
        parameters: Vec::new(),
        body: Some(body),
    }
}

/// Every link of the document.
fn chains() -> Vec<Chain> {
    let member = "$response.body#/disks/0";
    let mut all = vec![
        with_body(
            "disk_add",
            "201",
            "group_create",
            json!({ "disks": [NAME] }),
        ),
        with_body(
            "group_create",
            "201",
            "volume_create",
            json!({ "group": NAME }),
        ),
        with_body(
            "volume_create",
            "201",
            "copy_create",
            json!({ "source": NAME }),
        ),
        with_body(
            "volume_get",
            "200",
            "copy_create",
            json!({ "source": NAME }),
        ),
        with_body(
            "copy_create",
            "201",
            "copy_create",
            json!({ "source": NAME }),
        ),
        with_body(
            "disk_add",
            "201",
            "group_extend",
            json!({ "disks": [NAME] }),
        ),
    ];
    for to in ["disk_fail", "disk_replace"] {
        all.push(Chain {
            from: "group_get",
            status: "200",
            to,
            parameters: vec![("name", member)],
            body: None,
        });
    }
    all.extend(by_name("disk_add", "201", &["disk_get", "disk_remove"]));
    all.extend(by_name(
        "group_create",
        "201",
        &["group_get", "group_extend", "group_delete"],
    ));
    all.extend(by_name(
        "volume_create",
        "201",
        &["volume_get", "volume_grow", "volume_delete"],
    ));
    all.extend(by_name(
        "copy_create",
        "201",
        &["copy_get", "copy_restore", "copy_split", "copy_delete"],
    ));
    all.extend(by_id("disk_replace", "202"));
    all.extend(by_id("job_get", "200"));
    all
}

/// Adds every link to the answers of `doc`'s operations; a link whose
/// operations or answer the document lacks is left out.
pub fn add_links(doc: &mut OpenApi) {
    for chain in chains() {
        let Some(op) = operation(doc, chain.from) else {
            continue;
        };
        let Some(RefOr::T(answer)) = op.responses.responses.get_mut(chain.status) else {
            continue;
        };
        let mut link = LinkBuilder::new().operation_id(chain.to);
        for (name, expr) in &chain.parameters {
            link = link.parameter(*name, *expr);
        }
        if let Some(body) = chain.body {
            link = link.request_body(Some(body));
        }
        answer
            .links
            .insert(chain.to.to_string(), link.build().into());
    }
}

/// The operation whose id is `id`.
fn operation<'a>(doc: &'a mut OpenApi, id: &str) -> Option<&'a mut Operation> {
    doc.paths
        .paths
        .values_mut()
        .flat_map(operations)
        .find(|op| op.operation_id.as_deref() == Some(id))
}
