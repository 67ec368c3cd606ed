//! The answers every operation can give, added to the generated document in
//! one place so that no route forgets one: 400 where it takes input, 413
//! where it takes a body, and the machine's 500 and 503 everywhere. The
//! routes document their own 404, 409 and 422 (`routes.rs`).

#![forbid(unsafe_code)]

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};

/// (status, when) of the answers any operation with input can give.
const WITH_INPUT: [(&str, &str); 1] = [(
    "400",
    "The request does not match this document: unparsable JSON, an unknown field, a wrong \
     type, a number out of range, or a bad path or query value",
)];

/// (status, when) of the answers any operation with a body can give.
const WITH_BODY: [(&str, &str); 1] = [("413", "The body is larger than 2 MiB")];

/// (status, when) of the answers any operation can give: faults of the
/// machine, never of the request.
const ANY: [(&str, &str); 2] = [
    (
        "500",
        "A disk or the daemon failed while handling the request (see the daemon's log)",
    ),
    (
        "503",
        "The daemon is stopping, or too many disks of a group are missing to serve it",
    ),
];

/// Adds the common answers to every operation of `doc`, keeping any that a
/// route documents itself.
pub fn add_common_answers(doc: &mut OpenApi) {
    doc.paths
        .paths
        .values_mut()
        .flat_map(operations)
        .for_each(add_to);
}

/// The operations of a path.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

fn add_to(op: &mut Operation) {
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    if has_params || has_body {
        add(op, &WITH_INPUT);
    }
    if has_body {
        add(op, &WITH_BODY);
    }
    add(op, &ANY);
}

fn add(op: &mut Operation, answers: &[(&str, &str)]) {
    for (status, when) in answers {
        op.responses
            .responses
            .entry((*status).to_string())
            .or_insert_with(|| api_error(when));
    }
}

/// A response whose body is an `ApiError`.
fn api_error(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ApiError")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build()
        .into()
}
