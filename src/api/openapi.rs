//! The OpenAPI 3.1 document, generated from the route handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::routes::{records, sync, system, tables, transfer};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "MobileSyncDB",
        description = "Sync server for offline-first mobile apps: records, queries, differential sync, export and import. Every error is application/problem+json.",
    ),
    paths(
        system::health, system::openapi, system::metrics, system::stats, system::config,
        system::mint_token,
        tables::list_tables, tables::get_table, tables::put_table, tables::put_access,
        records::create, records::read, records::patch_record, records::replace_record,
        records::delete, records::list, records::query,
        sync::pull, sync::push, sync::ack, sync::list_sessions, sync::end_session,
        transfer::export, transfer::import,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, metrics, statistics, configuration, tokens"),
        (name = "tables", description = "Tables, schemas and access rules"),
        (name = "records", description = "Records and queries"),
        (name = "sync", description = "Differential sync: pull, push, acknowledge"),
        (name = "transfer", description = "Export and import"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or admin key")
                    .description(Some(
                        "A client token (JWT, HS256) from `POST /v1/tokens` or `mobilesyncdb token`, or an admin key",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as JSON: built once, then served from memory.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    })
}
