//! The OpenAPI 3.1 document, generated from the route handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::routes::{
    conflicts, live, records, schema, sync, system, tables, transfer, webhooks,
};

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
        conflicts::list_policies, conflicts::get_table_policies, conflicts::put_table_policies,
        conflicts::list_conflicts, conflicts::get_conflict, conflicts::resolve_conflict,
        schema::get_schema, schema::list_versions, schema::get_version, schema::diff_versions,
        schema::plan_schema, schema::apply_schema, schema::put_min_client_version,
        records::create, records::read, records::patch_record, records::replace_record,
        records::delete, records::list, records::query,
        sync::pull, sync::push, sync::ack, sync::list_sessions, sync::end_session,
        live::stream,
        transfer::export, transfer::import,
        webhooks::create_webhook, webhooks::list_webhooks, webhooks::get_webhook,
        webhooks::update_webhook, webhooks::delete_webhook, webhooks::rotate_secret,
        webhooks::list_deliveries, webhooks::replay, webhooks::list_events,
    ),
    components(schemas(live::ChangeEvent, live::ResetEvent)),
    modifiers(&BearerAuth),
    tags(
        (name = "system", description = "Health, metrics, statistics, configuration, tokens"),
        (name = "tables", description = "Tables, schemas and access rules"),
        (name = "schema", description = "Schema versions: documents, diffs, migrations, the oldest app version served"),
        (name = "conflicts", description = "Merge policies at run time, the conflict log, manual resolution"),
        (name = "records", description = "Records and queries"),
        (name = "sync", description = "Differential sync: pull (or long-poll), push, acknowledge; the change stream"),
        (name = "transfer", description = "Export and import"),
        (name = "webhooks", description = "Webhook endpoints, signed deliveries, the delivery log, replay and the event log"),
    )
)]
struct ApiDoc;

/// A cluster node's routes.
#[cfg(feature = "cluster")]
#[derive(OpenApi)]
#[openapi(
    paths(
        crate::api::routes::cluster::cluster_status, crate::api::routes::cluster::heads,
        crate::api::routes::cluster::sync, crate::api::routes::cluster::repair,
    ),
    tags((name = "cluster", description = "A cluster node: peers, stream position and lag; anti-entropy")),
)]
struct ClusterDoc;

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
        #[cfg_attr(not(feature = "cluster"), allow(unused_mut))]
        let mut document = ApiDoc::openapi();
        #[cfg(feature = "cluster")]
        document.merge(ClusterDoc::openapi());
        document
            .to_pretty_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
    })
}
