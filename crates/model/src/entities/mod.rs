//! One declaration per Kong entity (`kong/db/schema/entities/*.lua` and the plugin DAOs).

mod acls;
mod basicauth_credentials;
mod ca_certificates;
mod certificates;
mod consumers;
mod hmacauth_credentials;
mod jwt_secrets;
mod keyauth_credentials;
mod plugins;
mod routes;
mod services;
mod snis;
mod targets;
pub use basicauth_credentials::hash_password;
pub use targets::normalize_target;

#[cfg(test)]
mod tests;
mod upstreams;

use crate::schema::EntitySchema;
use std::sync::LazyLock;

/// Every entity, parents before children (the order imports insert in and exports list).
pub static ALL: LazyLock<Vec<EntitySchema>> = LazyLock::new(|| {
    vec![
        certificates::schema(),
        ca_certificates::schema(),
        snis::schema(),
        services::schema(),
        routes::schema(),
        consumers::schema(),
        upstreams::schema(),
        targets::schema(),
        plugins::schema(),
        keyauth_credentials::schema(),
        basicauth_credentials::schema(),
        jwt_secrets::schema(),
        hmacauth_credentials::schema(),
        acls::schema(),
    ]
});

/// Looks an entity up by its table name (`keyauth_credentials`).
pub fn by_name(name: &str) -> Option<&'static EntitySchema> {
    ALL.iter().find(|s| s.name == name)
}

/// Looks an entity up by its Admin API collection (`key-auths`).
pub fn by_admin_path(path: &str) -> Option<&'static EntitySchema> {
    ALL.iter().find(|s| s.admin_path == path)
}

/// Base entity with Kong's common fields; each file fills the rest.
pub(crate) fn entity(name: &'static str, admin_path: &'static str) -> EntitySchema {
    EntitySchema {
        name,
        admin_path,
        nested_path: None,
        endpoint_key: None,
        fields: Vec::new(),
        checks: Vec::new(),
        shorthands: Vec::new(),
        cache_key: None,
        workspaceable: true,
        import_order: 0,
        ttl: false,
        transient: Vec::new(),
        transform: None,
    }
}

/// A random credential string as Kong's `random_string()` makes: 32 hex characters.
pub fn random_string() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
