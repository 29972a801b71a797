//! Kong 2.8's `cassandra_*` kong.conf keys as the Cassandra store's settings.

use tollgate_config::Config;
use tollgate_store::cassandra::{self, CassandraSettings, Replication};

/// Kong 2.8's `cassandra_*` keys.
pub fn cassandra_settings(config: &Config) -> anyhow::Result<CassandraSettings> {
    let raw = |k: &str| {
        config
            .raw
            .get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    };
    let on = |k: &str| matches!(raw(k), Some("on" | "true"));
    let local_datacenter = raw("cassandra_local_datacenter").map(str::to_string);
    let lb_policy = raw("cassandra_lb_policy").unwrap_or("RequestRoundRobin");
    let dc_aware = match lb_policy {
        "RoundRobin" | "RequestRoundRobin" => false,
        "DCAwareRoundRobin" | "RequestDCAwareRoundRobin" => true,
        other => anyhow::bail!(
            "invalid value for 'cassandra_lb_policy': {other:?} (expected one of: RoundRobin, RequestRoundRobin, DCAwareRoundRobin, RequestDCAwareRoundRobin)"
        ),
    };
    if dc_aware && local_datacenter.is_none() {
        anyhow::bail!(
            "must specify 'cassandra_local_datacenter' when {lb_policy} policy is in use"
        );
    }
    let replication = match config.cassandra_repl_strategy.as_str() {
        "SimpleStrategy" => Replication::Simple(config.cassandra_repl_factor),
        "NetworkTopologyStrategy" => {
            let dcs: Vec<String> = raw("cassandra_data_centers")
                .unwrap_or("dc1:2,dc2:3")
                .split(',')
                .map(str::to_string)
                .collect();
            Replication::NetworkTopology(
                cassandra::parse_data_centers(&dcs).map_err(|e| anyhow::anyhow!("{}", e.message()))?,
            )
        }
        other => anyhow::bail!(
            "invalid value for 'cassandra_repl_strategy': {other:?} (expected SimpleStrategy or NetworkTopologyStrategy)"
        ),
    };
    let consistency = |key: &str, v: &str| {
        cassandra::parse_consistency(key, v).map_err(|e| anyhow::anyhow!("{}", e.message()))
    };
    Ok(CassandraSettings {
        contact_points: config.cassandra_contact_points.clone(),
        port: config.cassandra_port,
        keyspace: config.cassandra_keyspace.clone(),
        write_consistency: consistency(
            "cassandra_write_consistency",
            &config.cassandra_write_consistency,
        )?,
        read_consistency: consistency(
            "cassandra_read_consistency",
            &config.cassandra_read_consistency,
        )?,
        // Kong: LOCAL_SERIAL with a datacenter-aware policy, else SERIAL.
        serial_consistency: if dc_aware {
            cassandra::SerialConsistency::LocalSerial
        } else {
            cassandra::SerialConsistency::Serial
        },
        replication,
        local_datacenter,
        username: Some(config.cassandra_username.clone()),
        password: config.cassandra_password.clone().filter(|p| !p.is_empty()),
        ssl: on("cassandra_ssl"),
        ssl_verify: on("cassandra_ssl_verify"),
        trusted_cas: crate::node::trusted_cas(config),
        timeout: config.cassandra_timeout,
        schema_consensus_timeout: crate::node::millis_key(
            config,
            "cassandra_schema_consensus_timeout",
        )?
        .unwrap_or(std::time::Duration::from_secs(10)),
        update_frequency: config.db_update_frequency,
        node_id: format!("{}:{}", crate::node::hostname(), std::process::id()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::LoadOptions;
    use tollgate_store::cassandra::{Consistency, SerialConsistency};

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<CassandraSettings> {
        let mut opts = LoadOptions::isolated().set("database", "cassandra");
        for (k, v) in pairs {
            opts = opts.set(*k, *v);
        }
        let loaded = Config::load(opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        cassandra_settings(&loaded.config)
    }

    #[test]
    fn kong_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.contact_points, ["127.0.0.1"]);
        assert_eq!((s.port, s.keyspace.as_str()), (9042, "kong"));
        assert_eq!(s.write_consistency, Consistency::One);
        assert_eq!(s.serial_consistency, SerialConsistency::Serial);
        assert_eq!(s.replication, Replication::Simple(1));
        assert_eq!(s.timeout, std::time::Duration::from_secs(5));
        assert_eq!(
            s.schema_consensus_timeout,
            std::time::Duration::from_secs(10)
        );
        // No password: no authentication is offered.
        assert!(s.password.is_none());
    }

    #[test]
    fn consistency_alias_topology_and_datacenter_aware_policy() {
        let s = settings(&[("cassandra_consistency", "QUORUM")]).unwrap();
        assert_eq!(s.write_consistency, Consistency::Quorum);
        assert_eq!(s.read_consistency, Consistency::Quorum);
        let s = settings(&[
            ("cassandra_repl_strategy", "NetworkTopologyStrategy"),
            ("cassandra_data_centers", "eu:3,us:2"),
            ("cassandra_lb_policy", "RequestDCAwareRoundRobin"),
            ("cassandra_local_datacenter", "eu"),
            ("cassandra_schema_consensus_timeout", "30000"),
            ("db_update_frequency", "0.25"),
        ])
        .unwrap();
        assert_eq!(
            s.replication,
            Replication::NetworkTopology(vec![("eu".into(), 3), ("us".into(), 2)])
        );
        assert_eq!(s.serial_consistency, SerialConsistency::LocalSerial);
        assert_eq!(s.local_datacenter.as_deref(), Some("eu"));
        assert_eq!(
            s.schema_consensus_timeout,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(s.update_frequency, std::time::Duration::from_millis(250));
        let e = settings(&[("cassandra_lb_policy", "DCAwareRoundRobin")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("must specify 'cassandra_local_datacenter'"),
            "{e}"
        );
    }

    #[test]
    fn tls_keys() {
        let s = settings(&[]).unwrap();
        assert!(!s.ssl && !s.ssl_verify && s.trusted_cas.is_empty());
        let s = settings(&[
            ("cassandra_ssl", "on"),
            ("cassandra_ssl_verify", "on"),
            ("lua_ssl_trusted_certificate", "system,/etc/ca.pem"),
        ])
        .unwrap();
        assert!(s.ssl && s.ssl_verify);
        assert_eq!(s.trusted_cas, [std::path::PathBuf::from("/etc/ca.pem")]);
    }
}
